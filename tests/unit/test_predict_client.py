"""The client side of `digitq predict` without a broker: rows as the CSV writes them, and the
pipeline with a prefetch (chunks preprocessed before the client connects) against one without.

A stand-in client answers each chunk with made-up probabilities derived from its pixels, so the
rows show which pixels reached which file; it knows one model, so no Redis is needed.
"""

from __future__ import annotations

import concurrent.futures

import csv
import io
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from digitq.client import predict
from digitq.client.predict import CSV_COLUMNS, Row, RowWriter, predict_folder, prefetch_folder


def reference_dict(row: Row) -> dict:
    """Row.as_dict as it was before the CSV writer's speed-up (NumPy argmax, a dict per row)."""
    d = {"path": row.path, "digit": "", "confidence": "", "flag": row.flag, "error": row.error or ""}
    if row.probs is not None:
        digit = int(np.argmax(row.probs))
        d.update(digit=digit, confidence=round(float(row.probs[digit]), 6))
    for i in range(10):
        d[f"p{i}"] = round(float(row.probs[i]), 6) if row.probs is not None else ""
    return d


probabilities = st.lists(st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from([0.0, -0.0, 0.5, 1.0]),
                         min_size=10, max_size=10)


@settings(max_examples=500, deadline=None)
@given(probabilities)
def test_property_argmax_is_numpys(values):
    assert predict._argmax(values) == int(np.argmax(values))


def test_csv_rows_are_what_the_dict_writer_wrote(tmp_path):
    rng = np.random.default_rng(0)
    rows = [Row('odd, "quoted".png', None, 'bad "file", truncated'), Row("tie.png", [0.1] * 10, None),
            Row("nan.png", [0.1, math.nan] + [0.2] * 8, None), Row("zeros.png", [-0.0, 0.0] + [0.0] * 8, None)]
    rows += [Row(f"{i}.png", rng.random(10).tolist(), None if i % 7 else "warning") for i in range(300)]
    expected = io.StringIO(newline="")
    writer = csv.DictWriter(expected, CSV_COLUMNS)
    writer.writeheader()
    for row in rows:
        writer.writerow(reference_dict(row))
    out = tmp_path / "out.csv"
    rw = RowWriter(str(out), "csv")
    for row in rows:
        rw.write(row)
    rw.close()
    assert out.read_bytes().decode() == expected.getvalue()
    assert (rw.classified, rw.failed) == (303, 1)
    for row in rows:
        assert list(row.as_dict()) == CSV_COLUMNS
        assert str(row.as_dict()) == str(reference_dict(row))  # same values and types (nan == nan here)


# --- the pipeline, with a stand-in client --------------------------------------------------


class FakeClient:
    """The Client methods the pipeline uses: one model, blobs with their expiry kept, and a queue
    that answers each chunk at once."""

    def __init__(self):
        self.values, self.expiry = {}, {}  # the blobs (a chunk's pixels) and their time to live
        self.results, self.task_ids = {}, []
        self.in_queue = self.most_in_queue = 0
        self.jobs = []

    def show_model(self, ref):
        return {"name": "digits", "version": 3}

    def put_blob(self, key, data, ttl):
        self.values[key], self.expiry[key] = data, ttl

    def delete_blobs(self, keys):
        for key in keys:
            self.values.pop(key, None)

    def send(self, task, payload, queue, task_id=None):
        assert set(payload) == {"model", "pixels_key", "count", "packed"}  # the pixels travel beside the message
        assert payload["packed"] is True  # (answered here as an older worker would: lists; both read alike)
        raw = self.values[payload["pixels_key"]]
        pixels = np.frombuffer(raw, np.uint8).reshape(payload["count"], 784)
        means = pixels.mean(axis=1) / 255
        self.results[task_id] = {"model": "digits:3", "probs": [[round(float(m), 6)] * 10 for m in means],
                                 "errors": [None] * len(means)}
        self.task_ids.append(task_id)
        self.in_queue += 1
        self.most_in_queue = max(self.most_in_queue, self.in_queue)
        return task_id

    def record_job(self, job_id, kind, name, request):
        self.jobs.append((job_id, request["files"]))

    def watchdog(self, queue, what):
        return None

    def wait_result(self, task_id, timeout, on_poll=None, queue=None, on_check=None, watchdog=None):
        if on_poll:
            on_poll()  # the real client sends ready chunks between two looks at the result
        self.in_queue -= 1
        return self.results[task_id]

    def forget_results(self, task_ids):
        self.forgotten = getattr(self, "forgotten", []) + list(task_ids)


@pytest.fixture
def folder(tmp_path):
    rng = np.random.default_rng(1)
    for i in range(23):
        pixels = np.full((28, 28), 255, np.uint8)
        pixels[4:24, 10 + i % 5: 14 + i % 5] = rng.integers(0, 60)
        Image.fromarray(pixels).save(tmp_path / f"{i:03d}.png")
    (tmp_path / "010.png").write_text("not an image")
    return tmp_path


def run(folder, **kw) -> tuple[list, FakeClient]:
    client = FakeClient()
    rows = [(r.path, r.probs, r.error) for r in predict_folder(client, str(folder), "digits", chunk_size=4,
                                                                batch_id="b", **kw)]
    return rows, client


def test_prefetched_chunks_give_the_same_rows_and_tasks(folder):
    plain, plain_client = run(folder, processes=2)
    early = prefetch_folder(str(folder), chunk_size=4, batch_id="b", processes=2)
    assert early is not None and len(early.entries) == 6  # all of them: fewer than PREPARE_AHEAD
    prefetched, client = run(folder, processes=2, prefetch=early)
    assert prefetched == plain
    # chunks are sent as their pixels are ready, not necessarily in order
    assert sorted(client.task_ids) == sorted(plain_client.task_ids) == [f"b-{i:06d}" for i in range(6)]
    assert client.jobs == [("b", 23)]
    assert [p for p, probs, e in plain if e] == ["010.png"]
    one_process, _ = run(folder, processes=1)
    assert one_process == plain


def test_pixels_go_beside_the_message_and_are_deleted_once_read(folder):
    # Every chunk preprocessed before the first is sent, so the window fills whatever the
    # preprocessing processes' start-up costs (the fake client's results are there at once).
    early = prefetch_folder(str(folder), chunk_size=4, window=2, batch_id="b", processes=2)
    concurrent.futures.wait([entry["future"] for entry in early.entries])
    rows, client = run(folder, processes=2, window=2, prefetch=early)
    assert len(rows) == 23 and len(client.task_ids) == 6
    assert client.values == {}  # every chunk's pixels deleted once its result was read
    assert sorted(client.forgotten) == sorted(client.task_ids)  # and its result (read in order, sent as ready)
    assert set(client.expiry.values()) == {3600 + predict.PIXELS_GRACE}  # the wait, then a grace period
    assert client.most_in_queue == 2  # 6 chunks prepared, never more than `window` in the queue


def test_an_interrupted_run_deletes_the_pixels_it_left_in_the_queue(folder):
    client = FakeClient()
    # one process: every chunk is preprocessed at once, so the window alone decides what is sent
    rows = predict_folder(client, str(folder), "digits", chunk_size=4, batch_id="b", processes=1, window=3)
    next(rows)
    assert len(client.task_ids) == 3 and len(client.values) == 2  # the first chunk's result is read
    rows.close()  # as when the user presses Ctrl-C while rows are written
    assert client.values == {}


def test_a_prefetch_for_other_arguments_is_dropped(folder):
    early = prefetch_folder(str(folder), chunk_size=5, batch_id="b", processes=2)
    rows, client = run(folder, processes=2, prefetch=early)
    assert early.pool._shutdown_thread
    assert rows == run(folder, processes=2)[0]
    assert sorted(client.task_ids) == [f"b-{i:06d}" for i in range(6)]  # chunks of 4, as asked


def test_nothing_is_prefetched_when_predict_folder_would_refuse(folder, tmp_path):
    assert prefetch_folder(str(folder), chunk_size=0, batch_id="b", processes=2) is None
    assert prefetch_folder(str(folder), batch_id="b", processes=-1) is None
    assert prefetch_folder(str(folder), batch_id="b", processes=1) is None  # no pool: nothing to overlap
    assert prefetch_folder(str(folder / "missing"), batch_id="b", processes=2) is None
    empty = tmp_path / "empty"
    empty.mkdir()
    assert prefetch_folder(str(empty), batch_id="b", processes=2) is None


def test_errors_keep_their_order_with_a_prefetch(folder, monkeypatch):
    """An unknown model is still reported before anything else, and the prefetch is shut down."""
    early = prefetch_folder(str(folder), chunk_size=4, batch_id="b", processes=2)

    def unknown(self, ref):
        raise predict.DigitqError(f"no model {ref}")

    monkeypatch.setattr(FakeClient, "show_model", unknown)
    with pytest.raises(predict.DigitqError, match="no model digits"):
        run(folder, processes=2, prefetch=early)
    assert early.pool._shutdown_thread
