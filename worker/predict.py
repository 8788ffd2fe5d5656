"""Prediction and evaluation with registered models: a small in-process model cache, batched
inference, and the chunk/listing/evaluation jobs.

Inference runs on one device (the first GPU, else the CPU), not under MirroredStrategy:
`model.predict` under the strategy has a large fixed cost per call whatever the batch (a
predict chunk is one call), and a chunk smaller than the replica count crashed Keras'
batch-norm on the empty replica. `predict_on_batch` on one device is much faster, for a chunk
and most of all for a single image (BENCHMARKS.md). A loaded model has its batch-norm folded
into its convolutions (`fold_batch_norm`), which saves CPU per image, and for predict chunks
computes in bfloat16 where the CPU has bfloat16 arithmetic (`devices.inference_precision`:
faster there, the same digits); evaluations and reports compute in float32, as training scored the model.

    probs = predict_pixels(settings, record, pixels)     # uint8 N x 28 x 28 -> N x 10
"""

from __future__ import annotations

import base64
import logging
import os
from collections import OrderedDict
from pathlib import Path

import numpy as np

from digitq.common.errors import DataError, DigitqError, ImageError, NoSuchModel
from digitq.common.folders import iter_image_files
from digitq.common.images import load_images
from digitq.common.paths import resolve_within
from digitq.common.registry import resolve_model
from digitq.common.schemas import (MAX_LISTED_FILES, PIXELS_PER_IMAGE, EvaluateRequest, EvaluateResult, ListRequest,
                                   ListResult, PredictRequest, PredictResult)
from digitq.common.settings import Settings
from digitq.worker.scoring import score_predictions

log = logging.getLogger("digitq.worker")

MODEL_CACHE_SIZE = 4
"""Models kept loaded per worker process (a CNN is a few MB; loading one is slow next to predicting)."""

PREDICT_BATCH = 1024
"""Images per inference step."""



class ModelCache:
    """Loaded keras models by (path, mtime), least recently used dropped first."""

    def __init__(self, size: int = MODEL_CACHE_SIZE):
        self.size = size
        self._models: OrderedDict = OrderedDict()

    def get(self, path: Path, settings: Settings, exact: bool = False):
        """The model at `path`, batch-norm folded, in the worker's inference precision (bfloat16
        where the CPU has it, `devices.inference_precision`), or in float32 with `exact`: evaluations
        and reports, whose figures must be the training's own."""
        import keras

        from digitq.worker.devices import configure_devices, inference_precision

        device_type = configure_devices(settings)["device_type"]
        precision = "float32" if exact else inference_precision(settings, device_type)
        try:
            key = (str(path), path.stat().st_mtime_ns, precision)
        except OSError:
            raise NoSuchModel(f"the model file {path} is missing from the shared volume") from None
        if key in self._models:
            self._models.move_to_end(key)
            return self._models[key]
        from digitq.worker.model import fold_batch_norm, with_precision

        model = with_precision(fold_batch_norm(keras.models.load_model(path, compile=False)), precision)
        # Trace the predict function now, not on the first chunk a user is waiting for. Two batch
        # sizes: on a second size TensorFlow retraces once for any batch size (reduce_retracing),
        # which a first 500-image chunk after a 1024-image warm-up would otherwise pay.
        for batch in (PREDICT_BATCH, 1):
            model.predict_on_batch(np.zeros((batch, 28, 28, 1), np.uint8))
        log.info("loaded %s for inference (%s)", path, precision)
        self._models[key] = model
        while len(self._models) > self.size:
            self._models.popitem(last=False)
        return self._models[key]


CACHE = ModelCache()


def _member_paths(settings: Settings, record: dict) -> list[Path]:
    paths = record.get("members") or [record["path"]]
    return [resolve_within(p, [settings.home]) for p in paths]


def predict_pixels(settings: Settings, record: dict, pixels: np.ndarray, exact: bool = False) -> np.ndarray:
    """Probabilities (N x 10, float32) of a registered model; an ensemble averages its members.
    `exact`: in float32 whatever the worker's inference precision (see ModelCache.get)."""
    if len(pixels) == 0:
        return np.zeros((0, 10), np.float32)
    total = None
    paths = _member_paths(settings, record)
    for path in paths:
        model = CACHE.get(path, settings, exact)
        probs = np.concatenate([np.asarray(model.predict_on_batch(pixels[i:i + PREDICT_BATCH, :, :, None]))
                                for i in range(0, len(pixels), PREDICT_BATCH)])
        total = probs if total is None else total + probs
    return (total / len(paths)).astype(np.float32)


def decode_pixels(b64: str, count: int) -> np.ndarray:
    return _digits(base64.b64decode(b64, validate=True), count, "pixels hold")


def fetch_pixels(r, key: str, count: int) -> np.ndarray:
    """A chunk's raw pixels from Redis, where the client put them beside the task message (raw
    bytes: no base64 and JSON on either side, ~0.3 CPU-s per 10,000 images in all)."""
    raw = r.get(key)
    if raw is None:
        raise DataError(f"the chunk's pixels ({key}) are gone from Redis: the client that sent it gave up, "
                        "or they expired")
    return _digits(raw, count, f"{key} holds")


def _digits(raw: bytes, count: int, what: str) -> np.ndarray:
    """`count` packed 28 x 28 digits as an array; DigitqError("<what> N bytes, ...") if the size is wrong."""
    if len(raw) != count * PIXELS_PER_IMAGE:
        raise DigitqError(f"{what} {len(raw)} bytes, expected {count} x {PIXELS_PER_IMAGE}")
    return np.frombuffer(raw, np.uint8).reshape(count, 28, 28)


def run_predict_chunk(payload, settings: Settings, r) -> dict:
    """One chunk: {"model": "name:version", "probs": [[10 floats] | null], "errors": [str | null]}."""
    req = PredictRequest.from_dict(payload)
    record = resolve_model(r, req.model)
    if req.pixels_key is not None:
        pixels = fetch_pixels(r, req.pixels_key, req.count)
        errors = [None] * req.count
    elif req.pixels is not None:
        pixels = decode_pixels(req.pixels, req.count)
        errors = [None] * req.count
    else:
        folder = resolve_within(req.folder, [settings.data_dir, settings.home], base=settings.data_dir)
        errors, paths = [], []
        for rel in req.paths:
            try:
                paths.append(resolve_within(rel, [folder], base=folder))
                errors.append(None)
            except DigitqError as exc:
                errors.append(str(exc))
        digits = iter(load_images(paths))
        images = []
        for i, err in enumerate(errors):
            if err is None:
                digit = next(digits)
                if isinstance(digit, ImageError):
                    errors[i] = str(digit)
                else:
                    images.append(digit)
        pixels = np.stack(images) if images else np.zeros((0, 28, 28), np.uint8)
    probs = predict_pixels(settings, record, pixels)
    from digitq.worker import prometheus

    prometheus.images_predicted(len(pixels))
    model = f"{record['name']}:{record['version']}"
    if req.packed:
        return PredictResult.packing(model, probs, errors).to_dict()
    # An older client's lists: six decimals keep the JSON small.
    return PredictResult(model=model, probs=PredictResult.spread(probs, errors), errors=errors).to_dict()


def run_list_images(payload, settings: Settings) -> dict:
    """--remote: the files of a folder below the worker's roots, relative to it, in sorted order."""
    req = ListRequest.from_dict(payload)
    folder = resolve_within(req.folder, [settings.data_dir, settings.home], base=settings.data_dir)
    if not folder.is_dir():
        raise DataError(f"folder {folder} does not exist on the worker")
    files = []
    for path in iter_image_files(folder, recursive=req.recursive):
        files.append(os.path.relpath(path, folder))
        if len(files) > MAX_LISTED_FILES:
            raise DigitqError(f"folder {folder} holds more than {MAX_LISTED_FILES} files")
    return ListResult(folder=str(folder), files=files).to_dict()


def run_evaluate(payload, settings: Settings, r) -> dict:
    """Accuracy, loss, per-class accuracy and confusion matrix of a registered model."""
    from digitq.worker.data import load_labelled_dataset, load_mnist

    req = EvaluateRequest.from_dict(payload)
    record = resolve_model(r, req.model)
    if req.dataset == "mnist-test":
        m = load_mnist(settings)
        x, y = m["test_images"][: req.test_size], m["test_labels"][: req.test_size]
        skipped = []
    else:
        _, x, y, skipped = load_labelled_dataset(settings, req.dataset)
    scores = score_predictions(predict_pixels(settings, record, x, exact=True), y)
    return EvaluateResult(model=f"{record['name']}:{record['version']}", dataset=req.dataset, images=int(len(y)),
                          skipped=[list(e) for e in skipped], **scores).to_dict()
