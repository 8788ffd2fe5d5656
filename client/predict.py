"""`digitq predict`: walk a folder, preprocess each image locally (784 bytes cross the queue),
send chunks as tasks any worker may take, and yield one row per file in file order.

Memory stays bounded on both sides: at most `window` chunks are in the queue at once (their
pixels beside them in Redis, deleted once the result is read), up to PREPARE_AHEAD chunks are
preprocessed here ahead of them, and rows are written as their chunk's result arrives. With
`remote=True` the folder is on the shared volume: a worker lists it and the chunks carry paths
instead of pixels.
"""

from __future__ import annotations

import csv
import itertools
import json
import os
import uuid
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

from digitq.common.celery_keys import task_meta_key
from digitq.common.doubt import BLANK, DEFAULT_MIN_CONFIDENCE, flag_for, is_blank_message
from digitq.common.errors import DigitqError, ImageError, InvalidRequest, JobVanished
from digitq.common.folders import iter_image_files
from digitq.common.names import LIST_TASK, PREDICT_QUEUE, PREDICT_TASK, job_key, pixels_key
from digitq.common.schemas import ListRequest, ListResult, PredictResult

if TYPE_CHECKING:
    import numpy as np

DEFAULT_CHUNK = 500
"""Images per task: big enough to amortise the queue round trip, small enough to spread."""

DEFAULT_WINDOW = 6
"""Chunks in the queue at once per client (bounds the memory Redis holds for one run)."""

PREPARE_AHEAD = 24
"""Chunks preprocessed ahead of the results read (784 bytes of pixels per image): enough that
the workers never wait for this client, even while it starts up."""

PREPROCESS_NICENESS = 5
"""The preprocessing processes run at a lower priority: this process's start-up and sending
(which the workers wait for) come first, and they take what CPU is left."""

PIXELS_GRACE = 300
"""Seconds a chunk's pixels outlive the client's wait for its result (then Redis drops them)."""

CSV_COLUMNS = ["path", "digit", "confidence", "flag", "error"] + [f"p{d}" for d in range(10)]
"""A row's columns; `flag` is one of digitq.common.doubt.FLAGS or empty."""


@dataclass
class Row:
    path: str
    probs: list | None
    error: str | None
    pixels: np.ndarray | None = None  # the preprocessed 28 x 28 digit, only with keep_pixels (--gallery)
    flag: str = ""  # digitq.common.doubt's verdict: "", blank, not-one-digit, unsure

    columns = CSV_COLUMNS

    @property
    def classified(self) -> bool:
        """A prediction, or a blank image (no prediction; flagged blank): not a failed file."""
        return self.probs is not None or self.flag == BLANK

    def values(self) -> list:
        """The CSV_COLUMNS values in order ("" where there is none), as the CSV writes them."""
        if self.probs is None:
            return [self.path, "", "", self.flag, self.error or ""] + [""] * 10
        probs = [round(float(self.probs[i]), 6) for i in range(10)]
        digit = _argmax(self.probs)
        return [self.path, digit, probs[digit], self.flag, self.error or ""] + probs

    def as_dict(self) -> dict:
        return dict(zip(self.columns, self.values()))


def _argmax(values: list) -> int:
    """int(np.argmax(values)) of a short list of floats, without NumPy's per-call cost."""
    total = sum(values)
    if total != total:  # a NaN (or inf - inf): np.argmax's own rules for it
        import numpy as np

        return int(np.argmax(values))
    return values.index(max(values))  # the first of equal maxima, as np.argmax


def _preprocess_chunk(folder: Path, paths: list[Path], number: bool = False) -> tuple[list[str], list, bytes, int]:
    """Relative names, per-file errors (None when fine), packed pixels of the good ones, their count.
    With `number`, each file's name comes once per digit of the number it holds (`--number`)."""
    if number:
        from digitq.client.numbers import preprocess_numbers

        return preprocess_numbers(folder, paths)
    from digitq.common.images import load_images  # NumPy and Pillow: imported here, in the preprocessing processes

    names, errors, digits = [], [], []
    prefix = os.path.join(str(folder), "")
    for p, digit in zip(paths, load_images(paths)):
        path = str(p)
        # The listing joined these paths onto `folder`: cutting the prefix gives relpath's answer
        # without its two abspath calls per file.
        names.append(path[len(prefix):] if path.startswith(prefix) else os.path.relpath(path, folder))
        if isinstance(digit, ImageError):
            errors.append(str(digit))
        else:
            digits.append(digit)
            errors.append(None)
    return names, errors, b"".join(d.tobytes() for d in digits), len(digits)


def _check_writable_file(option: str, path: str) -> None:
    """Refuse a file name that cannot be written: a folder, a missing or read-only parent folder."""
    target = Path(path).expanduser()
    if target.is_dir():
        raise InvalidRequest(f"{option} {path} is a folder; give a file name")
    parent = target.parent
    if not parent.is_dir():
        raise InvalidRequest(f"{option} {path}: the folder {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InvalidRequest(f"{option} {path}: the folder {parent} is not writable")
    if target.exists() and not os.access(target, os.W_OK):
        raise InvalidRequest(f"{option} {path}: the file exists and is not writable")


def check_predict_options(output: str | None = None, fmt: str = "csv", gallery: str | None = None,
                          remote: bool = False, chunk_size: int = DEFAULT_CHUNK, processes: int = 0) -> None:
    """Refuse bad `digitq predict` options, one line each (InvalidRequest: exit 2), before any
    work or connection."""
    if gallery is not None:
        if remote:
            raise InvalidRequest("--gallery draws the images as they are preprocessed here; with --remote the workers read them")
        _check_writable_file("--gallery", gallery)
    if fmt not in ("csv", "json"):
        raise InvalidRequest(f"--format must be csv or json, got {fmt!r}")
    if output is not None and output != "-":
        _check_writable_file("output", output)
    if not 1 <= chunk_size <= 5000:
        raise InvalidRequest(f"--chunk-size must be between 1 and 5000, got {chunk_size}")
    if processes < 0:
        raise InvalidRequest(f"--jobs must be 0 (automatic) or more, got {processes}")


def predict_folder(client, folder: str, model: str, recursive: bool = False, chunk_size: int = DEFAULT_CHUNK,
                   remote: bool = False, window: int = DEFAULT_WINDOW,
                   on_total: Callable[[int], None] | None = None, timeout: float = 3600,
                   batch_id: str | None = None, processes: int = 0, keep_pixels: bool = False,
                   prefetch: _Pipeline | None = None,
                   on_model: Callable[[dict], None] | None = None,
                   min_confidence: float = DEFAULT_MIN_CONFIDENCE, number: bool = False) -> Iterator[Row]:
    """Yield a Row per file of `folder`, in sorted file order, through `client` (a Client).
    `batch_id` names the run in `digitq jobs`; its chunks are tasks `<batch_id>-000000`,
    `-000001`, ... `processes` preprocess images (0: one per CPU core, at most 4). With
    `keep_pixels` each classified Row also carries its preprocessed 28 x 28 digit (not with
    `remote`: workers read those files). `prefetch` is what `prefetch_folder` started with the
    same arguments (else it is dropped). `on_model` gets {"model": "NAME:VERSION"}, the version
    that classifies the run, once it is resolved. Each row carries its flag (see
    digitq.common.doubt; `min_confidence` sets `unsure`). With `number` each file's number is split
    into digits here and a row comes per digit, the file's name repeated (`--number`:
    digitq.client.numbers.compose_numbers joins them)."""
    pipeline = prefetch
    try:
        check_predict_options(chunk_size=chunk_size, processes=processes)
        if keep_pixels and remote:
            raise DigitqError("with --remote the workers read the images, so there are no pixels here to keep")
        record = client.show_model(model)  # unknown model: fail before any work
        ref = f"{record['name']}:{record['version']}"
        if on_model is not None:
            on_model({"model": ref})
        batch_id = batch_id or uuid.uuid4().hex
        processes = _process_count(processes)
        if number and remote:
            raise InvalidRequest("--number splits each image into digits here; with --remote the workers read them")
        if pipeline is not None and (remote or pipeline.key != (folder, recursive, chunk_size, window, processes, batch_id)
                                     or pipeline.number != number):
            pipeline.close()
            pipeline = None
        if remote:
            request = ListRequest(folder=folder, recursive=recursive).to_dict()
            listing = ListResult.from_dict(client.call(LIST_TASK, request, PREDICT_QUEUE, timeout, task_id=f"{batch_id}-list"))
            base, files = listing.folder, listing.files
        elif pipeline is not None:
            base, files = pipeline.base, pipeline.files
        else:
            base, files = _list_local(folder, recursive)
        if not files:
            raise InvalidRequest(_empty_folder_message(folder, base, recursive, remote))
        if on_total:
            on_total(len(files))
        client.record_job(batch_id, "predict", record["name"], {"folder": str(folder), "model": ref, "files": len(files)})

        if pipeline is None:
            pipeline = _Pipeline(base, remote, batch_id, processes, number=number)
            pipeline.fill(files, chunk_size, window)
        pipeline.client, pipeline.ref, pipeline.timeout = client, ref, timeout
        while pipeline.entries:
            names, errors, result, pixels = pipeline.next_result(timeout)
            pipeline.add_next()  # keep preprocessing ahead while this chunk's rows are written
            probs, remote_errors = iter(result.rows()), iter(result.errors)
            digits = iter(_unpack(pixels)) if keep_pixels else None
            shapes = _shape_flags(pixels)  # --- the flags (digitq.common.doubt)
            for name, err in zip(names, errors):
                if err is not None:
                    yield Row(name, None, None, flag=BLANK) if is_blank_message(err) else Row(name, None, err)
                else:
                    row = Row(name, next(probs), next(remote_errors), next(digits) if digits is not None else None)
                    shape = next(shapes) if shapes is not None else ""
                    if row.probs is not None:
                        row.flag = flag_for(max(row.probs), shape, min_confidence)
                    elif row.error and is_blank_message(row.error):  # --remote: the worker found no ink
                        row.error, row.flag = None, BLANK
                    yield row
    finally:
        if pipeline is not None:
            pipeline.close()


def _empty_folder_message(folder: str, base: str, recursive: bool, remote: bool) -> str:
    """Why there is nothing to classify, with the way out when the images sit in sub-folders."""
    if not recursive and not remote:
        try:
            subfolders = [e.name for e in os.scandir(base) if e.is_dir(follow_symlinks=False)]
        except OSError:
            subfolders = []
        if subfolders:
            return (f"folder {folder} holds no files, only {len(subfolders)} sub-folder(s) "
                    f"(e.g. {sorted(subfolders)[0]}); add --recursive to classify their images")
    return f"folder {folder} holds no files"


def _shape_flags(pixels: bytes | None) -> Iterator[str] | None:
    """digitq.common.doubt.shape_flags of a chunk's packed digits (None with --remote: no pixels here)."""
    if pixels is None:
        return None
    from digitq.common.doubt import shape_flags

    return iter(shape_flags(_unpack(pixels))) if pixels else iter(())


def _unpack(pixels: bytes) -> np.ndarray:
    """Packed 28 x 28 digits (what a chunk sends) as an N x 28 x 28 uint8 array."""
    import numpy as np

    return np.frombuffer(pixels, np.uint8).reshape(-1, 28, 28)


def prefetch_folder(folder: str, recursive: bool = False, chunk_size: int = DEFAULT_CHUNK,
                    window: int = DEFAULT_WINDOW, batch_id: str | None = None, processes: int = 0,
                    number: bool = False) -> _Pipeline | None:
    """Start preprocessing a local folder's first chunks before the client connects, so
    that its start-up (importing Celery and redis, reaching the broker) overlaps that work;
    pass the result to `Client.predict` (or `predict_folder`) and close it if you don't. None
    when there is nothing to start early: bad options, one process, or a folder that
    `predict_folder` will report as missing or empty (it checks the model first)."""
    if not 1 <= chunk_size <= 5000 or processes < 0 or not batch_id:
        return None
    processes = _process_count(processes)
    if processes < 2:
        return None
    try:
        base, files = _list_local(folder, recursive)
    except DigitqError:
        return None
    if not files:
        return None
    pipeline = _Pipeline(base, False, batch_id, processes, number=number)
    pipeline.key = (folder, recursive, chunk_size, window, processes, batch_id)
    pipeline.fill(files, chunk_size, window)
    return pipeline


def _process_count(processes: int) -> int:
    """Preprocessing processes (`predict --jobs`), 0 meaning one per CPU core, at most 4."""
    return processes or min(4, os.cpu_count() or 1)


def _list_local(folder: str, recursive: bool) -> tuple[str, list[Path]]:
    """The folder (with ~ expanded) and its candidate files; InvalidRequest if it is not a folder."""
    root = Path(folder).expanduser()
    if not root.exists():
        raise InvalidRequest(f"folder {folder} does not exist")
    if not root.is_dir():
        raise InvalidRequest(f"{folder} is not a folder")
    return str(root), list(iter_image_files(root, recursive=recursive))


class _Pipeline:
    """Chunks in flight, in file order: preprocessed in a process pool (local mode), sent to
    the queue as soon as their pixels are ready (once `client` and `ref` are set), and read
    back in order."""

    def __init__(self, base: str, remote: bool, batch_id: str, processes: int, number: bool = False):
        self.client, self.ref, self.timeout = None, None, 3600.0
        self.number = number  # --number: each file split into its digits
        self.base, self.remote, self.batch_id = base, remote, batch_id
        self.key: tuple | None = None
        self.files: list = []
        self.chunks: Iterator[list] = iter(())
        self.pool = None
        if not remote and processes > 1:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            # fork is safe here: the client never imports TensorFlow.
            self.pool = ProcessPoolExecutor(max_workers=processes, mp_context=multiprocessing.get_context("fork"),
                                            initializer=os.nice, initargs=(PREPROCESS_NICENESS,))
        self.entries: deque = deque()
        self.count = 0
        self.window = DEFAULT_WINDOW
        self.in_queue = 0  # chunks sent whose result is not read yet
        self.dog = None  # the run's Watchdog (digitq.client.api), made at the first wait

    def fill(self, files: list, chunk_size: int, window: int) -> None:
        """Split `files` into chunks and start the first ones: `window` of them (they go to the
        queue together), or PREPARE_AHEAD when they are preprocessed here."""
        self.files = files
        self.window = window
        if self.number:  # a file is up to MAX_CANDIDATES digits: a chunk stays within a task's limit
            from digitq.client.numbers import FILES_PER_CHUNK

            chunk_size = min(chunk_size, FILES_PER_CHUNK)
        self.chunks = (files[i:i + chunk_size] for i in range(0, len(files), chunk_size))
        for part in itertools.islice(self.chunks, window if self.remote else max(window, PREPARE_AHEAD)):
            self.add(part)

    def add_next(self) -> None:
        """Start the next chunk, if any is left."""
        part = next(self.chunks, None)
        if part is not None:
            self.add(part)

    def add(self, part: list) -> None:
        entry = {"task_id": f"{self.batch_id}-{self.count:06d}", "sent": False}
        self.count += 1
        if self.remote:
            entry["prep"] = (list(part), [None] * len(part), None, len(part))
        elif self.pool is not None:
            entry["future"] = self.pool.submit(_preprocess_chunk, Path(self.base), part, self.number)
        else:
            entry["prep"] = _preprocess_chunk(Path(self.base), part, self.number)
        self.entries.append(entry)

    def _send(self, entry: dict) -> None:
        if "prep" not in entry:
            entry["prep"] = entry.pop("future").result()
        names, errors, pixels, count = entry["prep"]
        if self.remote:
            payload = {"model": self.ref, "folder": self.base, "paths": names, "packed": True}
        elif count:
            # The pixels go to Redis as raw bytes beside a small message that names them: inside
            # the message they would be base64 and JSON on both sides, twice over (kombu wraps
            # the body again). The probabilities come back packed too (PredictResult.rows).
            entry["key"] = pixels_key(entry["task_id"])
            self.client.put_blob(entry["key"], pixels, ttl=int(self.timeout) + PIXELS_GRACE)
            payload = {"model": self.ref, "pixels_key": entry["key"], "count": count, "packed": True}
        if self.remote or count:
            self.client.send(PREDICT_TASK, payload, PREDICT_QUEUE, task_id=entry["task_id"])
            self.in_queue += 1
        else:
            entry["task_id"] = None  # nothing to classify in this chunk
        entry["sent"] = True

    def pump(self) -> None:
        """Send the chunks whose pixels are ready, earliest first, while fewer than `window` are
        in the queue (called while waiting for results)."""
        for entry in self.entries:
            if self.in_queue >= self.window:
                return
            if not entry["sent"] and ("prep" in entry or entry["future"].done()):
                self._send(entry)

    def next_result(self, timeout: float) -> tuple[list, list, PredictResult, bytes | None]:
        entry = self.entries[0]
        if not entry["sent"]:
            self._send(entry)
        self.pump()
        if entry["task_id"] is None:
            result = PredictResult(model=self.ref, probs=[], errors=[])
        else:
            try:
                if self.dog is None:  # one for the whole run: a failover between two chunks is seen too
                    self.dog = self.client.watchdog(PREDICT_QUEUE, "digitq predict")
                result = PredictResult.from_dict(self.client.wait_result(entry["task_id"], timeout, on_poll=self.pump,
                                                                         queue=PREDICT_QUEUE, on_check=self.check,
                                                                         watchdog=self.dog))
            finally:
                self.in_queue -= 1
                self._forget_pixels([entry])
            self.client.forget_results([entry["task_id"]])  # read: Redis need not keep it
        self.entries.popleft()
        names, errors, pixels, _ = entry["prep"]
        return names, errors, result, pixels

    def check(self, dog) -> None:
        """While waiting (every few seconds): stop with one line when Redis lost this run (it
        restarted empty), and send again the chunks in flight when Redis is another one than
        before (a Sentinel failover may have lost the newest writes; a chunk classified twice
        gives the same rows)."""
        r = self.client.redis
        if not r.exists(job_key(self.batch_id)):
            raise JobVanished("this predict run is gone from Redis (it restarted empty, or a failover lost it); "
                              "nothing was written: run it again")
        if dog.changed:
            for entry in self.entries:
                if entry["sent"] and entry["task_id"] is not None:
                    self._resend(entry)
            return
        head = self.entries[0] if self.entries else None
        if head is not None and head.get("key") and head["sent"]:
            pipe = r.pipeline()
            pipe.exists(head["key"])
            pipe.exists(task_meta_key(head["task_id"]))
            pixels, result = pipe.execute()
            if not pixels and not result:
                raise JobVanished(f"chunk {head['task_id']} is gone from Redis (its pixels and result are missing); "
                                  "nothing was written: run the predict again")

    def _resend(self, entry: dict) -> None:
        names, errors, pixels, count = entry["prep"]
        if "key" in entry:
            self.client.put_blob(entry["key"], pixels, ttl=int(self.timeout) + PIXELS_GRACE)
            payload = {"model": self.ref, "pixels_key": entry["key"], "count": count}
        else:
            payload = {"model": self.ref, "folder": self.base, "paths": names}
        self.client.send(PREDICT_TASK, payload, PREDICT_QUEUE, task_id=entry["task_id"])

    def _forget_pixels(self, entries) -> None:
        keys = [e.pop("key") for e in entries if "key" in e]
        if keys:
            try:
                self.client.delete_blobs(keys)
            except Exception:  # noqa: BLE001 - best effort: they expire anyway (PIXELS_GRACE)
                pass

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=False, cancel_futures=True)
        if self.client is not None:
            self._forget_pixels(self.entries)  # an interrupted run: its queued chunks' pixels


class RowWriter:
    """Writes rows as CSV (the columns in CSV_COLUMNS) or JSON lines, to a file or stdout.

    A file is opened at the first row, under a hidden temporary name (`.NAME.partial`), and
    renamed at `close(keep=True)`; `close(keep=False)` removes it. A run that fails before its
    first row (no broker, an unknown model, an empty folder) leaves nothing behind."""

    def __init__(self, path: str, fmt: str, columns: list[str] = CSV_COLUMNS):
        check_predict_options(path, fmt)
        self.columns = columns  # CSV_COLUMNS, or digitq.client.numbers.NUMBER_COLUMNS (--number)
        self.fmt = fmt
        self.path = path
        self.tmp = None if path == "-" else Path(path).expanduser().with_name(f".{Path(path).name}.partial")
        self.f = None
        self.csv = None
        self.classified = 0
        self.failed = 0
        self.flagged = 0

    def _open(self) -> None:
        if self.tmp is None:
            import sys

            self.f = sys.stdout
        else:
            try:
                self.f = open(self.tmp, "w", newline="")
            except OSError as exc:
                raise DigitqError(f"cannot write {self.path}: {exc.strerror}") from None
        self.csv = csv.writer(self.f) if self.fmt == "csv" else None  # DictWriter's output, without its dict per row
        if self.csv:
            self.csv.writerow(self.columns)

    def write(self, row: Row) -> None:
        if self.f is None:
            self._open()
        if row.classified:
            self.classified += 1
            self.flagged += bool(row.flag)
        else:
            self.failed += 1
        try:
            if self.csv:
                self.csv.writerow(row.values())
            else:
                d = row.as_dict()
                self.f.write(json.dumps({k: (v if v != "" else None) for k, v in d.items()}) + "\n")
        except OSError as exc:  # a full disk, a file-size limit: one line, and close(keep=False) cleans up
            raise DigitqError(f"cannot write {self.path}: {exc.strerror or exc}") from None

    def close(self, keep: bool = True) -> None:
        if self.f is None:
            if not keep:
                return
            self._open()  # no rows: the header alone
        if self.tmp is None:
            self.f.flush()
            return
        try:
            self.f.close()  # flushes: a full disk may refuse the last rows here
            if keep:
                os.replace(self.tmp, Path(self.path).expanduser())  # the output appears whole, or not at all
        except OSError as exc:
            self.tmp.unlink(missing_ok=True)
            if keep:
                raise DigitqError(f"cannot write {self.path}: {exc.strerror or exc}") from None
        finally:
            if not keep:
                self.tmp.unlink(missing_ok=True)
