"""Job requests and results as dataclasses of JSON types, validated on both sides of the queue.

The client validates before it submits (bad input fails at once, with one line); the worker
validates again, because anybody with the broker URL can put a message on the queue.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from typing import Any

from digitq.common.errors import InvalidRequest
from digitq.common.names import PIXELS_KEY_PREFIX

ARCHITECTURES = ("cnn", "seed-cnn", "mlp")
"""Model architectures by name; see worker/model.py."""

SCHEDULES = ("onecycle", "constant")
AUGMENTATIONS = ("none", "shift", "affine", "elastic")
PRECISIONS = ("float32", "mixed")

MODEL_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")  # \Z: `$` also matches before a final newline
JOB_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}\Z")


def check_model_name(name: Any) -> str:
    if not isinstance(name, str) or not MODEL_NAME_RE.fullmatch(name):
        raise InvalidRequest(
            f"invalid model name {name!r}: use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    return name


def check_job_id(job_id: Any) -> str:
    if not isinstance(job_id, str) or not JOB_ID_RE.fullmatch(job_id):
        raise InvalidRequest(f"invalid job id {job_id!r}: use letters, digits, '_' or '-' (at most 128)")
    return job_id


def _spec(default, kind, lo=None, hi=None, choices=None, optional=False, doc="", item=int, max_len=4,
          max_chars=4096):
    """A field with its validation rule in the metadata (`item`/`max_len`: a list's elements;
    `max_chars`: a string's length)."""
    meta = {"kind": kind, "lo": lo, "hi": hi, "choices": choices, "optional": optional, "doc": doc,
            "item": item, "max_len": max_len, "max_chars": max_chars}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


def _validate_field(name: str, value: Any, meta: dict) -> Any:
    kind, lo, hi = meta["kind"], meta["lo"], meta["hi"]
    if value is None:
        if meta["optional"]:
            return None
        raise InvalidRequest(f"{name} is required")
    if kind is bool:
        if not isinstance(value, bool):
            raise InvalidRequest(f"{name} must be true or false, got {value!r}")
        return value
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidRequest(f"{name} must be a whole number, got {value!r}")
    elif kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise InvalidRequest(f"{name} must be a number, got {value!r}")
        value = float(value)
    elif kind is str:
        if not isinstance(value, str):
            raise InvalidRequest(f"{name} must be a string, got {value!r}")
        if len(value) > meta["max_chars"]:
            raise InvalidRequest(f"{name} is too long ({len(value)} characters, limit {meta['max_chars']})")
        if meta["max_chars"] <= 4096 and any(ord(c) < 32 or ord(c) == 127 for c in value):
            raise InvalidRequest(f"{name} contains control characters")
        if meta["choices"] and value not in meta["choices"]:
            raise InvalidRequest(f"unknown {name} {value!r}: choose one of {', '.join(meta['choices'])}")
        return value
    elif kind is list:
        what = "whole numbers" if meta["item"] is int else "strings"
        if not isinstance(value, list) or not 1 <= len(value) <= meta["max_len"]:
            shown = repr(value) if len(repr(value)) < 80 else f"a list of {len(value)}" if isinstance(value, list) else type(value).__name__
            raise InvalidRequest(f"{name} must be a list of 1 to {meta['max_len']} {what}, got {shown}")
        return [_validate_field(f"{name}[{i}]", v, {**meta, "kind": meta["item"]}) for i, v in enumerate(value)]
    if lo is not None and value < lo or hi is not None and value > hi:
        if kind is float and lo is not None and lo > 0 and value <= 0:
            raise InvalidRequest(f"{name} must be > 0, got {value}")
        raise InvalidRequest(f"{name} must be between {lo} and {hi}, got {value}")
    return value


class _Validated:
    """from_dict/to_dict for a dataclass whose fields carry `_spec` metadata."""

    @classmethod
    def from_dict(cls, data: Any):
        if not isinstance(data, dict):
            raise InvalidRequest(f"a {cls.__name__} must be a JSON object, got {type(data).__name__}")
        known = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise InvalidRequest(f"unknown field(s) in {cls.__name__}: {', '.join(map(str, unknown))}")
        values = {}
        for name, f in known.items():
            if name in data:
                values[name] = _validate_field(name, data[name], f.metadata)
        obj = cls(**values)
        obj.check()
        return obj

    def check(self) -> None:
        """Cross-field checks; fields are validated one by one in from_dict."""
        for f in dataclasses.fields(self):
            _validate_field(f.name, getattr(self, f.name), f.metadata)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class TrainRequest(_Validated):
    """What `digitq submit-train` asks a worker to do. Unset (None) hyperparameters take the
    architecture's own defaults (see worker/model.py)."""

    arch: str = _spec("cnn", str, choices=ARCHITECTURES, doc="model architecture")
    epochs: int = _spec(5, int, 1, 1000, doc="passes over the training set")
    batch_size: int | None = _spec(None, int, 1, 8192, optional=True, doc="images per replica per step")
    learning_rate: float | None = _spec(None, float, 1e-7, 10.0, optional=True, doc="peak learning rate")
    dropout: float | None = _spec(None, float, 0.0, 0.95, optional=True, doc="dropout rate")
    conv_channels: list | None = _spec(None, list, 1, 1024, optional=True, doc="channels per conv stage")
    dense_units: int | None = _spec(None, int, 1, 16384, optional=True, doc="units of the hidden dense layer")
    seed: int = _spec(0, int, 0, 2**31 - 1, doc="seed for weights and shuffling")
    name: str = _spec("digits", str, doc="registered model name")
    dataset: str = _spec("mnist", str, doc="'mnist' or a folder with sub-folders 0..9")
    validation_size: int = _spec(5000, int, 0, 59000, doc="the last N training images are held out")
    train_size: int | None = _spec(None, int, 1, 60000, optional=True, doc="train on only the first N of the rest")
    test_size: int | None = _spec(None, int, 1, 10000, optional=True, doc="evaluate on the first N test images")
    standardize: bool = _spec(True, bool, doc="subtract the mean and divide by the std of the training pixels")
    shuffle: bool = _spec(True, bool, doc="reshuffle the training set every epoch (seeded)")
    schedule: str | None = _spec(None, str, choices=SCHEDULES, optional=True, doc="learning-rate schedule")
    label_smoothing: float | None = _spec(None, float, 0.0, 0.5, optional=True, doc="label smoothing")
    save_every_batches: int = _spec(0, int, 0, 10**6, doc="back up every N batches too (0 = each epoch only)")
    augment: str | None = _spec(None, str, choices=AUGMENTATIONS, optional=True,
                                doc="none, shift, affine (rotation, shear, zoom, shift) or elastic (affine + elastic distortion)")
    ensemble: int = _spec(1, int, 1, 16, doc="train K models (seeds seed..seed+K-1) and average them")
    track_test: bool = _spec(False, bool, doc="also score the test set after every epoch (for time-to-accuracy)")
    precision: str = _spec("float32", str, choices=PRECISIONS, doc="mixed = mixed_float16 on GPUs")
    jit: bool = _spec(False, bool, doc="XLA compilation")

    def check(self) -> None:
        super().check()
        check_model_name(self.name)


@dataclass
class TrainResult:
    """What a finished training job returns (and `--json` prints)."""

    job_id: str
    state: str
    test_accuracy: float
    test_loss: float
    per_class_accuracy: list  # fraction correct per digit 0..9
    confusion: list  # 10 x 10 counts, rows = true digit, columns = predicted
    epochs: int
    wall_seconds: float  # from the job's start on the worker to its result
    train_seconds: float  # sum of the epochs' wall times
    model: str  # "NAME:VERSION", usable as --model
    arch: str
    model_path: str
    history: list = field(default_factory=list)  # one dict per epoch
    replicas: int = 1
    devices: list = field(default_factory=list)
    train_images: int = 0
    dataset: str = "mnist"
    worker: str = ""  # host:pid of the worker that finished the job
    members: list = field(default_factory=list)  # an ensemble's model files (averaged)
    member_accuracies: list = field(default_factory=list)  # each member's own test accuracy
    warnings: list = field(default_factory=list)  # e.g. an accelerator option ignored on a CPU
    resumed: bool = False  # an earlier delivery was interrupted and this one went on from its backup

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "TrainResult":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


MAX_CHUNK_IMAGES = 5000
"""Most images one predict task carries (784 bytes each, base64: about 5 MB)."""

PIXELS_PER_IMAGE = 28 * 28


@dataclass
class PredictRequest(_Validated):
    """One chunk of a `digitq predict` run: preprocessed pixels, or paths on the shared volume."""

    model: str = _spec("digits", str, doc="NAME or NAME:VERSION")
    pixels: str | None = _spec(None, str, optional=True, max_chars=4 * (MAX_CHUNK_IMAGES * 784 + 2) // 3 + 4,
                               doc="base64 of count x 784 uint8 (MNIST-style)")
    pixels_key: str | None = _spec(None, str, optional=True, max_chars=200,
                                   doc="a Redis key (digitq:pixels:...) holding count x 784 raw bytes instead")
    count: int = _spec(0, int, 0, MAX_CHUNK_IMAGES, doc="images in pixels")
    folder: str | None = _spec(None, str, optional=True, doc="--remote: a folder below the worker's roots")
    paths: list | None = _spec(None, list, optional=True, item=str, max_len=MAX_CHUNK_IMAGES,
                               doc="--remote: files relative to folder")

    def check(self) -> None:
        super().check()
        if [self.pixels, self.pixels_key, self.paths].count(None) != 2:
            raise InvalidRequest("a predict request carries one of pixels, pixels_key or paths")
        if self.pixels_key is not None and not self.pixels_key.startswith(PIXELS_KEY_PREFIX):
            raise InvalidRequest(f"pixels_key must start with {PIXELS_KEY_PREFIX!r}")
        if self.paths is not None and self.folder is None:
            raise InvalidRequest("paths need a folder")
        if self.pixels is not None and len(self.pixels) != 4 * ((self.count * PIXELS_PER_IMAGE + 2) // 3):
            raise InvalidRequest(f"pixels must be base64 of count x {PIXELS_PER_IMAGE} bytes")
        from digitq.common.registry import parse_model_ref

        parse_model_ref(self.model)


@dataclass
class EvaluateRequest(_Validated):
    """`digitq evaluate`: score a registered model on MNIST's test set or a labelled folder."""

    model: str = _spec("digits", str, doc="NAME or NAME:VERSION")
    dataset: str = _spec("mnist-test", str, doc="'mnist-test' or a folder with sub-folders 0..9")
    test_size: int | None = _spec(None, int, 1, 10000, optional=True, doc="first N test images only")

    def check(self) -> None:
        super().check()
        from digitq.common.registry import parse_model_ref

        parse_model_ref(self.model)
