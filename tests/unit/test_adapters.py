"""The private APIs digitq relies on, checked against the installed libraries.

Each test fails loudly when an upgrade of kombu, Celery or TensorFlow changes something
that digitq.worker.compat or digitq.common.celery_keys wraps; the fix belongs in that module.
None of them trains or needs a broker.
"""

from __future__ import annotations

import inspect
import json
import logging

import pytest

from digitq.common.celery_app import make_celery
from digitq.common.celery_keys import TASK_META_PREFIX, task_meta_key
from digitq.common.settings import load_settings
from digitq.worker import compat

UNREACHABLE = "redis://127.0.0.1:1/0"


# --- Celery's result-backend keys (read by the client) ----------------------------------------


def test_celery_keeps_a_tasks_state_where_digitq_reads_it():
    backend = make_celery(load_settings(), UNREACHABLE).backend
    assert backend.get_key_for_task("job-1") == task_meta_key("job-1").encode(), (
        "Celery's Redis backend moved a task's state: update digitq.common.celery_keys")
    assert backend.task_keyprefix == TASK_META_PREFIX.encode()


# --- kombu's index of un-acked messages (refreshed by the job lease) ---------------------------


def test_kombu_indexes_unacked_messages_by_delivery_time_under_the_key_digitq_refreshes():
    from kombu.transport import redis as kombu_redis

    assert kombu_redis.Channel.unacked_index_key == compat.UNACKED_INDEX_KEY, (
        "kombu renamed its un-acked index: update digitq.worker.compat.UNACKED_INDEX_KEY")
    append = inspect.getsource(kombu_redis.QoS.append)
    assert "zadd(self.unacked_index_key" in append and "time()" in append, (
        "kombu no longer scores an un-acked message by its delivery time: the lease's refresh "
        "(digitq.worker.compat.refresh_unacked) would not keep a long job from being redelivered")
    restore = inspect.getsource(kombu_redis.QoS.restore_visible)
    assert "time() - self.visibility_timeout" in restore and "self.unacked_index_key" in restore, (
        "kombu redelivers un-acked messages by another rule than 'score older than visibility_timeout'")


def test_refresh_unacked_only_touches_a_message_that_is_still_unacked():
    calls = []

    class FakeRedis:
        def time(self):  # Redis' clock, not the worker's
            return (1000, 500000)

        def zadd(self, key, mapping, xx=False):
            calls.append((key, mapping, xx))

    compat.refresh_unacked(FakeRedis(), "tag-1")
    assert calls == [(compat.UNACKED_INDEX_KEY, {"tag-1": 1000.5}, True)]


# --- Celery's worker state (where the delivery tag is) -----------------------------------------


def _request(app, job_id: str, tag: str):
    """A real Celery worker Request for a real message of digitq's shape, as the worker builds it."""
    from celery.worker.request import Request
    from kombu import Message

    def probe(payload):
        return payload

    task = app.task(name="digitq.adapter-probe", shared=False, lazy=False)(probe)
    fields = app.amqp.as_task_v2(job_id, task.name, args=({"epochs": 1},))
    message = Message(body=json.dumps(fields.body), headers=fields.headers, properties=fields.properties,
                      delivery_tag=tag, content_type="application/json", content_encoding="utf-8")
    return Request(message, app=app, task=task)


@pytest.mark.parametrize("stage", ["reserved", "active"])
def test_the_delivery_tag_of_a_running_job_is_found_in_celerys_worker_state(stage):
    from celery.worker import state

    app = make_celery(load_settings(), UNREACHABLE)
    req = _request(app, "job-tag-test", "tag-42")
    assert req.id == "job-tag-test"
    (state.task_reserved if stage == "reserved" else state.task_accepted)(req)
    try:
        assert compat.delivery_tag_of("job-tag-test") == "tag-42", (
            "Celery's worker state no longer leads to the message's delivery tag: update "
            "digitq.worker.compat.delivery_tag_of")
    finally:
        state.task_ready(req)
    assert compat.delivery_tag_of("job-tag-test") is None


# --- TensorFlow: the oneDNN probe --------------------------------------------------------------


@pytest.fixture(scope="module")
def keras():
    keras = pytest.importorskip("keras")
    return keras


def test_tensorflow_still_says_whether_onednn_runs(keras):
    assert compat.onednn_enabled() in (True, False), (
        "TensorFlow's private _pywrap_util_port.IsMklEnabled is gone: the worker's `devices` log "
        "line and `digitq workers` would say onednn None")


def test_celerys_shutdown_handler_sends_worker_shutting_down():
    """digitq.worker.app hands a running training job back on `worker_shutting_down`: Celery
    must still send it from its SIGTERM/SIGINT handler, before the job's next batch."""
    import celery.apps.worker as apps_worker

    source = inspect.getsource(apps_worker._shutdown_handler)
    assert "worker_shutting_down.send" in source, (
        "Celery's SIGTERM handler no longer sends worker_shutting_down: a stopping worker would "
        "train to the end of its job (digitq.worker.shutdown)")


def test_celery_logs_a_task_success_with_a_dict_holding_id_and_return_value():
    """worker/compat.TaskResultSummaries rewrites `return_value` in that dict (issue 17, item 12)."""
    import celery.app.trace as trace

    from digitq.worker.compat import TRACE_LOGGER, TaskResultSummaries

    assert "%(return_value)s" in trace.LOG_SUCCESS and "%(id)s" in trace.LOG_SUCCESS
    assert trace.logger.name == TRACE_LOGGER
    f = TaskResultSummaries()
    f.summaries["t1"] = "500 image(s), 0 error(s), model digits:1"
    record = logging.LogRecord(TRACE_LOGGER, logging.INFO, __file__, 1, trace.LOG_SUCCESS,
                               ({"id": "t1", "name": "digitq.predict", "runtime": 0.5, "return_value": "{'probs': [...]}",
                                 "args": "", "kwargs": ""},), None)
    assert f.filter(record) and record.getMessage().endswith("succeeded in 0.5s: 500 image(s), 0 error(s), model digits:1")
    assert "t1" not in f.summaries  # one use each: the dict stays small


# --- kombu's Redis QoS while Redis is full (digitq.worker.compat.hold_messages_while_full) ------


def test_kombu_records_and_acks_unacked_messages_the_way_the_full_redis_patch_expects():
    from kombu.transport import redis as kombu_redis

    compat.hold_messages_while_full()
    compat.hold_messages_while_full()  # idempotent: wraps once
    patched = kombu_redis.QoS
    assert patched.append._digitq_holds and not getattr(patched.append._digitq_original, "_digitq_holds", False)
    ack = inspect.getsource(patched.ack._digitq_original) + inspect.getsource(patched._remove_from_indices)
    assert "zrem(self.unacked_index_key" in ack and "hdel(self.unacked_key" in ack, (
        "kombu acks a message by other writes than ZREM unacked_index + HDEL unacked: update "
        "digitq.worker.compat.hold_messages_while_full")
    append = inspect.getsource(patched.append._digitq_original)
    assert "zadd(self.unacked_index_key" in append and "hset(self.unacked_key" in append


# --- Keras: the moving average of the weights ---------------------------------------------------


def test_the_weights_average_warms_up_stays_out_of_the_model_until_asked_and_swaps_both_ways(keras):
    import numpy as np

    from digitq.worker.model import ema_weights, keep_average

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    opt = compat.with_ema_warm_up(keras.optimizers.Adam)(learning_rate=0.1, use_ema=True, ema_momentum=0.99)
    model.compile(opt, "mse")
    x, y = np.ones((8, 3), np.float32), np.zeros((8, 2), np.float32)
    start = [w.copy() for w in model.get_weights()]
    model.fit(x, y, batch_size=8, epochs=3, verbose=0)  # 3 steps
    raw = [w.copy() for w in model.get_weights()]
    assert not np.allclose(raw[0], start[0])
    assert opt.__class__.__name__ == "Adam"
    average = [v.numpy() for v in opt._model_variables_moving_average]
    # momentum min(0.99, (1 + step) / (10 + step)) = 0.1, 2/11, 3/12 for steps 0, 1, 2: the average
    # has left the random start far more than 0.99's 1 - 0.99**3 = 3% would have.
    moved = np.abs(average[0] - start[0]).sum() / np.abs(raw[0] - start[0]).sum()
    assert moved > 0.5, ("Keras changed Optimizer._update_model_variables_moving_average: "
                         "update digitq.worker.compat.with_ema_warm_up")
    assert all(np.allclose(a, b) for a, b in zip(model.get_weights(), raw)), "fit put the average in the model"
    with ema_weights(model):
        assert np.allclose(model.get_weights()[0], average[0])
    assert np.allclose(model.get_weights()[0], raw[0])  # swapped back
    keep_average(model)
    assert np.allclose(model.get_weights()[0], average[0])
