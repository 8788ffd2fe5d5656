"""The private parts of Celery, kombu and TensorFlow that the worker relies on, in one place.

Each function wraps one use of an API its library does not document, so that an upgrade that
changes it breaks here, and tests/unit/test_adapters.py says which one and how:

- kombu's Redis transport keeps un-acked messages in a sorted set (`unacked_index`, score =
  delivery time) and redelivers one `visibility_timeout` seconds after its score; the job lease
  refreshes that score, with Redis' clock, while a long job runs (`refresh_unacked`,
  `refresh_unacked_script`).
- Celery's task context does not carry a message's delivery tag; the worker's request objects
  in `celery.worker.state` do (`delivery_tag_of`).
- Celery logs each task's success through the `celery.app.trace` logger with a dict of
  arguments holding `id` and `return_value` (the result's repr, up to 1 KB); a predict chunk's
  result is its probabilities, so the worker replaces it with a summary line
  (`TaskResultSummaries`). It logs a task's `Reject(requeue=True)` with a traceback; a job
  handed back by a stopping worker is no error, so the worker drops that traceback
  (`QuietRequeues`).
- TensorFlow says whether its oneDNN CPU kernels run only through a private module
  (`onednn_enabled`).
- kombu's Redis transport pops a message off its queue (BRPOP) and then records it in its
  un-acked index (`QoS.append`); when Redis is full that record fails, the popped message
  exists only in this process and the error ends Celery's consumer; it acks a message with a
  MULTI transaction, which a full Redis refuses whole. `hold_messages_while_full` retries the
  record until Redis has room, and sends an ack's two deletes outside MULTI when full.
- Optuna keeps a trial's storage id, which `Trial(study, trial_id)` needs in the worker that
  reports a trial another worker asked, only as `_trial_id` (`optuna_trial_id`;
  tests/unit/test_sweep_space.py checks it).
- Keras swaps a model's weights with its optimizer's moving average of them (`use_ema`) only
  inside its SwapEMAWeights callback, whose predict hooks never swap back (keras 3.15);
  `swap_ema_weights` calls that callback's swap itself (it handles MirroredStrategy's variables).
  Its optimizers update that average with a fixed momentum from the first step
  (`_update_model_variables_moving_average`), so a short run's average stays close to the
  random initial weights; `with_ema_warm_up` overrides that update with a rising momentum. They
  also copy the average into the model at the end of every `fit` (`finalize_variable_values`),
  which `with_ema_warm_up` leaves to digitq (training may take several fits).

Celery's result-backend key format is in digitq.common.celery_keys, where the client can import it.
Nothing here imports Celery's worker, Keras or TensorFlow until a function is called.
"""

from __future__ import annotations

import logging

log = logging.getLogger("digitq.worker")

# --- kombu: the Redis transport's index of un-acked messages ---------------------------------

UNACKED_INDEX_KEY = "unacked_index"
"""kombu's Redis transport: sorted set of un-acked delivery tags, scored by delivery time
(unix seconds); `Channel.unacked_index_key`'s default in kombu 4 and 5."""


def refresh_unacked(r, delivery_tag: str, key: str = UNACKED_INDEX_KEY) -> None:
    """Mark the un-acked message `delivery_tag` as delivered now, so that kombu does not hand it
    to another worker for another `visibility_timeout` seconds. "Now" is Redis' clock (TIME),
    not this worker's, which may be off. XX: only while it is un-acked; an acked message is
    never put back."""
    seconds, micros = r.time()
    r.zadd(key, {delivery_tag: seconds + micros / 1e6}, xx=True)


def refresh_unacked_script(key: str, tag: str) -> str:
    """`refresh_unacked` as Lua lines for a script (the lease's heartbeat): `key` and `tag` are
    Lua expressions (e.g. KEYS[4], ARGV[7]). The script must allow TIME before writes
    (`redis.replicate_commands()`, the default from Redis 5)."""
    return (f"local now = redis.call('time')\n"
            f"redis.call('zadd', {key}, 'XX', tonumber(now[1]) + tonumber(now[2]) / 1000000, {tag})")


# --- Celery: the worker's own record of the messages it runs ---------------------------------


def delivery_tag_of(task_id: str) -> str | None:
    """The broker's delivery tag of the message this worker process runs as `task_id` (what the
    lease refreshes in kombu's unacked index), or None with a warning.

    Celery's task context does not carry it: its `delivery_info` holds exchange, routing key,
    priority and redelivered only; the worker's request objects (`celery.worker.state`) do."""
    from celery.worker import state

    for req in [*state.active_requests, *state.reserved_requests]:
        if req.id == task_id:
            return getattr(req.message, "delivery_tag", None)
    log.warning("no delivery tag for job %s: a run longer than the visibility timeout will be redelivered", task_id)
    return None


# --- TensorFlow: which CPU kernels run ------------------------------------------------------


def onednn_enabled() -> bool | None:
    """Whether TensorFlow runs its oneDNN kernels (None if this TensorFlow cannot tell).
    Imports TensorFlow."""
    try:
        from tensorflow.python.util import _pywrap_util_port  # private, but the only way to ask

        return bool(_pywrap_util_port.IsMklEnabled())
    except (ImportError, AttributeError):
        return None


# --- Celery: the "Task ... succeeded in ...: <result>" log line --------------------------------

TRACE_LOGGER = "celery.app.trace"
"""The logger through which Celery's task tracer logs each success (LOG_SUCCESS)."""


class TaskResultSummaries(logging.Filter):
    """Replaces the result repr in Celery's success line with a short summary for the tasks
    that set one (`summaries[task_id] = "500 images, 0 errors, digits:1"`): worker.log gets
    one line per predict chunk instead of its 5,000 probabilities."""

    def __init__(self):
        super().__init__()
        self.summaries: dict[str, str] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, dict) and args.get("id") in self.summaries and "return_value" in args:
            record.args = {**args, "return_value": self.summaries.pop(args["id"])}
        return True

    def install(self) -> TaskResultSummaries:
        logging.getLogger(TRACE_LOGGER).addFilter(self)
        return self


class QuietRequeues(logging.Filter):
    """Keeps Celery's "Task ... reject requeue=True: <reason>" line but drops its traceback: a
    stopping worker handing its job back (digitq.worker.shutdown) is not an error."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is not None and type(exc).__name__ == "Reject" and getattr(exc, "requeue", False):
            record.exc_info, record.exc_text = None, None
        return True

    def install(self) -> QuietRequeues:
        logging.getLogger(TRACE_LOGGER).addFilter(self)
        return self


# --- kombu: recording a delivered message while Redis is full ---------------------------------



def hold_messages_while_full() -> None:
    """Patch kombu's Redis `QoS.append` (see the module docstring) so that a delivered message
    whose un-acked record Redis refuses for lack of memory is held here and recorded once Redis
    has room, instead of being lost with the worker. Idempotent."""
    from kombu.transport import redis as kombu_redis
    from kombu.transport import virtual as kombu_virtual

    from digitq.common.redis_client import is_out_of_memory, while_full

    original = kombu_redis.QoS.append
    if getattr(original, "_digitq_holds", False):
        return

    def append(self, message, delivery_tag):
        return while_full(lambda: original(self, message, delivery_tag),
                          f"message {delivery_tag} held until Redis records it", f"message {delivery_tag} recorded")

    original_ack = kombu_redis.QoS.ack

    def ack(self, delivery_tag):
        try:
            return original_ack(self, delivery_tag)
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
        # kombu acks in a MULTI transaction, and a full Redis refuses every command queued in
        # one; the same two deletes sent one by one are allowed (they free memory).
        with self.channel.conn_or_acquire() as client:
            with client.pipeline(transaction=False) as pipe:
                pipe.zrem(self.unacked_index_key, delivery_tag).hdel(self.unacked_key, delivery_tag).execute()
        kombu_virtual.QoS.ack(self, delivery_tag)

    append._digitq_holds = True
    append._digitq_original, ack._digitq_original = original, original_ack  # for tests/unit/test_adapters.py
    kombu_redis.QoS.append = append
    kombu_redis.QoS.ack = ack


# --- Optuna: a trial asked in one process, reported to from another (digitq.worker.sweep) ---------


def optuna_trial_id(trial) -> int:
    """The storage id of an Optuna trial (Trial or FrozenTrial): `Trial(study, trial_id)` rebuilds
    a trial that another process asked, and Optuna keeps the id only as the private `_trial_id`."""
    return int(trial._trial_id)


def swap_ema_weights(model) -> None:
    """Exchange `model`'s trainable weights with its optimizer's moving average of them; calling
    it twice restores both. The optimizer must have been built with use_ema=True."""
    import keras

    swap = keras.callbacks.SwapEMAWeights()
    swap.set_model(model)
    swap._swap_variables()


def with_ema_warm_up(optimizer_class):
    """A subclass of the Keras optimizer class whose moving average of the weights (use_ema) warms
    up: momentum min(ema_momentum, (1 + step) / (10 + step)), as TensorFlow's
    ExponentialMovingAverage with num_updates, so that after a few dozen steps the average
    already follows the weights instead of the initialisation; and which puts the average into
    the model only when asked (`use_average`), not at the end of each `fit`."""
    from keras import ops

    class WarmEma(optimizer_class):
        def _update_model_variables_moving_average(self, trainable_variables):
            if not self.use_ema:
                return
            step = ops.cast(self.iterations, "float32")
            momentum = ops.minimum(self.ema_momentum, (1.0 + step) / (10.0 + step))
            for var, average in zip(trainable_variables, self._model_variables_moving_average):
                if average is not None:
                    m = ops.cast(momentum, var.dtype)
                    average.assign(ops.add(ops.multiply(m, average), ops.multiply(ops.subtract(1, m), var)))

        def finalize_variable_values(self, var_list):
            """Keras calls this at the end of every `fit` to put the average into the model; digitq
            trains in several fits (a resumed epoch's rest, then the other epochs), so it does
            that once, when training is done: `use_average` (model.keep_average)."""

        def use_average(self, var_list):
            super().finalize_variable_values(var_list)

    WarmEma.__name__ = optimizer_class.__name__  # what logs and reports call it
    return WarmEma
