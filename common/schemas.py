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

from digitq.common.errors import InvalidRequest, InvalidResult
from digitq.common.names import PIXELS_KEY_PREFIX

ARCHITECTURES = ("fast-cnn", "cnn", "seed-cnn", "mlp")
"""Model architectures by name; see worker/model.py."""

SCHEDULES = ("onecycle", "constant")
AUGMENTATIONS = ("none", "shift", "stroke", "affine", "elastic")
PRECISIONS = ("float32", "mixed")

_ADAM = dict(adam_betas=(0.9, 0.999), ema=0.0, warmup=0.25)  # Keras' Adam defaults, no average of the weights

ARCH_DEFAULTS = {
    # digitq's default: a 5x5 and a 3x3 convolution (24 and 48 channels), each followed by 2x2
    # max-pooling, then batch norm and ReLU on the pooled (4x smaller) map; a 256-unit dense
    # layer. 3.1M multiply-adds per image against cnn's 6.7M, in the style of the fastest
    # published MNIST recipe (tuomaso/train_mnist_fast): Adam with betas 0.7/0.9, batch 256,
    # one-cycle; plus AdamW's decay, label smoothing, random shifts, and a moving average of the
    # weights (momentum 0.98) that validation, --track-test and the saved model use. Warm-up:
    # the share of the one-cycle schedule's steps spent rising to the peak rate.
    "fast-cnn": dict(learning_rate=4e-3, dropout=0.0, conv_channels=(24, 48), dense_units=256,
                     batch_size=256, schedule="onecycle", weight_decay=5e-4, label_smoothing=0.1, augment="shift",
                     adam_betas=(0.7, 0.9), ema=0.98, warmup=0.1),
    # The default until 2026-12: a 5x5 stride-2 stem, three stages of two batch-normalised 3x3
    # convs, global average pooling; AdamW with a one-cycle schedule, label smoothing and random
    # shifts. 290k weights; after 5 epochs about as accurate as fast-cnn, at twice its cost.
    "cnn": dict(learning_rate=3e-3, dropout=0.0, conv_channels=(32, 64, 128), dense_units=0,
                batch_size=128, schedule="onecycle", weight_decay=5e-4, label_smoothing=0.1, augment="shift", **_ADAM),
    # The tutorials' CNN and recipe: Adam 1e-4 at a constant rate, batch 50.
    "seed-cnn": dict(learning_rate=1e-4, dropout=0.5, conv_channels=(32, 64), dense_units=1024,
                     batch_size=50, schedule="constant", weight_decay=0.0, label_smoothing=0.0, augment="none", **_ADAM),
    "mlp": dict(learning_rate=1e-3, dropout=0.2, conv_channels=(), dense_units=512,
                batch_size=128, schedule="onecycle", weight_decay=0.0, label_smoothing=0.0, augment="none", **_ADAM),
}
"""Each architecture's hyperparameters, used where a TrainRequest leaves them unset (None);
the one source of these defaults (worker/model.py builds with them, `--help` and the README show them)."""

MODEL_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")  # \Z: `$` also matches before a final newline
JOB_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}\Z")


def check_model_name(name: Any) -> str:
    if not isinstance(name, str) or not MODEL_NAME_RE.fullmatch(name) or ".." in name:
        raise InvalidRequest(
            f"invalid model name {name!r}: use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"
            " (no '..')"
        )
    return name


def check_job_id(job_id: Any) -> str:
    if not isinstance(job_id, str) or not JOB_ID_RE.fullmatch(job_id):
        raise InvalidRequest(f"invalid job id {job_id!r}: use letters, digits, '_' or '-' (at most 128)")
    return job_id


def _spec(default, kind, lo=None, hi=None, choices=None, optional=False, doc="", item=int, max_len=4,
          max_chars=4096, flag=None, unset=None, min_len=1, nan_ok=False):
    """A field with its validation rule in the metadata (`item`/`max_len`: a list's elements, `item`
    None for any JSON value; `max_chars`: a string's length). `doc` is the field's help text (the
    CLI's `--help`), `flag` its command-line option where the name differs, `unset` what None means
    when it is not the architecture's default (e.g. "all")."""
    meta = {"kind": kind, "lo": lo, "hi": hi, "choices": choices, "optional": optional, "doc": doc,
            "item": item, "max_len": max_len, "max_chars": max_chars, "flag": flag, "unset": unset,
            "min_len": min_len, "nan_ok": nan_ok}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


def _validate_field(name: str, value: Any, meta: dict) -> Any:
    kind, lo, hi = meta["kind"], meta["lo"], meta["hi"]
    if value is None:
        if meta["optional"]:
            return None
        raise InvalidRequest(f"{name} is required")
    if kind is None:
        return value
    if kind is bool:
        if not isinstance(value, bool):
            raise InvalidRequest(f"{name} must be true or false, got {value!r}")
        return value
    if kind is dict:
        if not isinstance(value, dict):
            raise InvalidRequest(f"{name} must be a JSON object, got {type(value).__name__}")
        return value
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidRequest(f"{name} must be a whole number, got {value!r}")
    elif kind is float:
        if (isinstance(value, bool) or not isinstance(value, (int, float))
                or not (math.isfinite(value) or meta.get("nan_ok") and math.isnan(value))):
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
        what = {int: "whole numbers", str: "strings", float: "numbers"}.get(meta["item"], "values")
        if not isinstance(value, list) or not meta["min_len"] <= len(value) <= meta["max_len"]:
            shown = repr(value) if len(repr(value)) < 80 else f"a list of {len(value)}" if isinstance(value, list) else type(value).__name__
            raise InvalidRequest(f"{name} must be a list of {meta['min_len']} to {meta['max_len']} {what}, got {shown}")
        if meta["item"] is None:  # any JSON values: the class's check() looks inside
            return value
        item = {**meta, "kind": meta["item"], "optional": False, "item": None, "min_len": 0, "max_len": 10**6}
        return [_validate_field(f"{name}[{i}]", v, item) for i, v in enumerate(value)]
    if lo is not None and value < lo or hi is not None and value > hi:
        if kind is float and lo is not None and lo > 0 and value <= 0:
            raise InvalidRequest(f"{name} must be > 0, got {value}")
        raise InvalidRequest(f"{name} must be between {lo} and {hi}, got {value}")
    return value


class _Validated:
    """from_dict/to_dict for a dataclass whose fields carry `_spec` metadata.

    A request refuses fields it does not know. A result ignores them: workers are upgraded before
    clients (README, Upgrading), so an older client must read what a newer worker adds."""

    _results = False

    @classmethod
    def from_dict(cls, data: Any):
        try:
            return cls._from_dict(data)
        except InvalidRequest as exc:
            if cls._results:
                raise InvalidResult(f"a worker returned an unexpected {cls.__name__}: {exc}") from None
            raise

    @classmethod
    def _from_dict(cls, data: Any):
        if not isinstance(data, dict):
            raise InvalidRequest(f"a {cls.__name__} must be a JSON object, got {type(data).__name__}")
        known = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(known))
        if unknown and not cls._results:
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


class _Result(_Validated):
    """A task's result: validated by the client that reads it, unknown fields ignored."""

    _results = True

    def to_dict(self) -> dict:
        """The fields as they are (no deep copy: a predict chunk's rows are thousands of lists)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


def _required(kind, **kw):
    """A result field the worker always sets (None until then, refused by check())."""
    return _spec(None, kind, **kw)


# --- training --------------------------------------------------------------------------------


@dataclass
class TrainRequest(_Validated):
    """What `digitq submit-train` asks a worker to do. Unset (None) hyperparameters take the
    architecture's own defaults (ARCH_DEFAULTS). Each field's `doc` is its `--help` text."""

    arch: str = _spec("fast-cnn", str, choices=ARCHITECTURES,
                      doc="Architecture: fast-cnn (default), cnn (the default until 2026-12: twice the cost per "
                          "image), seed-cnn (the tutorials' CNN) or mlp.")
    epochs: int = _spec(5, int, 1, 1000, doc="Passes over the training set.")
    batch_size: int | None = _spec(None, int, 1, 8192, optional=True,
                                   doc="Images per replica per step (global = this x replicas).")
    learning_rate: float | None = _spec(None, float, 1e-7, 10.0, optional=True, flag="--lr", doc="Peak learning rate.")
    dropout: float | None = _spec(None, float, 0.0, 0.95, optional=True, doc="Dropout rate, 0 to 0.95.")
    conv_channels: list | None = _spec(None, list, 1, 1024, optional=True,
                                       doc="Channels per conv stage: 2 for fast-cnn and seed-cnn, 3 for cnn.")
    dense_units: int | None = _spec(None, int, 1, 16384, optional=True, doc="Units of the hidden dense layer.")
    seed: int = _spec(0, int, 0, 2**31 - 1, doc="Seed for weights and shuffling.")
    name: str = _spec("digits", str, doc="Register the trained model under this name.")
    dataset: str = _spec("mnist", str,
                         doc="'mnist', or a folder (below DIGITQ_DATA_DIR or DIGITQ_HOME) with sub-folders 0..9.")
    validation_size: int = _spec(5000, int, 0, 59000, doc="Hold out the last N training images for validation.")
    train_size: int | None = _spec(None, int, 1, 60000, optional=True, unset="all",
                                   doc="Train on only the first N images (quick experiments).")
    test_size: int | None = _spec(None, int, 1, 10000, optional=True, unset="all",
                                  doc="Evaluate on only the first N test images.")
    standardize: bool = _spec(True, bool, doc="Standardise pixels with the training set's mean and std.")
    shuffle: bool = _spec(True, bool, doc="Reshuffle the training set every epoch (seeded).")
    schedule: str | None = _spec(None, str, choices=SCHEDULES, optional=True,
                                 doc="Learning-rate schedule: onecycle or constant.")
    label_smoothing: float | None = _spec(None, float, 0.0, 0.5, optional=True, doc="Label smoothing, 0 to 0.5. The model then never gets fully sure: with 0.1 a clean digit's confidence tops out near 93%.")
    save_every_batches: int = _spec(0, int, 0, 10**6, flag="--save-every",
                                    doc="Back up every N batches as well as every epoch (0 = epochs only).")
    augment: str | None = _spec(None, str, choices=AUGMENTATIONS, optional=True, flag="--augment/--no-augment",
                                doc="Random affine augmentation (rotation, shear, zoom, shift), or none at all.")
    ensemble: int = _spec(1, int, 1, 16,
                          doc="Train K models (seeds seed..seed+K-1) as K member jobs spread over the workers; one model averages them.")
    track_test: bool = _spec(False, bool, flag="--track-test",
                             doc="Also score the test set after every epoch (history gets test_accuracy).")
    # --- sweeps (digitq.common.sweep): set on a sweep's trial jobs only, never by submit-train ---
    sweep: dict | None = _spec(None, dict, optional=True, doc="A sweep's trial: {id, slot}.")
    precision: str = _spec("float32", str, choices=PRECISIONS,
                           doc="float32, or mixed (mixed_float16 with loss scaling; GPUs only, ignored with a warning on CPUs).")
    jit: bool = _spec(False, bool, flag="--jit", doc="XLA compilation (GPUs only, ignored with a warning on CPUs).")

    def check(self) -> None:
        super().check()
        check_model_name(self.name)
        if self.sweep is not None:  # a sweep's trial (digitq.common.sweep)
            from digitq.common.sweep import check_sweep_ref

            check_sweep_ref(self.sweep)
        stages = len(ARCH_DEFAULTS[self.arch]["conv_channels"])
        if self.conv_channels is not None and len(self.conv_channels) != stages:
            if not stages:
                raise InvalidRequest(f"{self.arch} has no conv stages: leave out conv_channels (--conv-channels)")
            raise InvalidRequest(f"conv_channels for {self.arch} takes {stages} numbers (one per stage), "
                                 f"got {len(self.conv_channels)}: {','.join(map(str, self.conv_channels))}")

    def effective(self) -> dict:
        """The request with every unset hyperparameter replaced by the architecture's value: what
        the worker trains with (`models show` prints these)."""
        d = self.to_dict()
        for key, value in ARCH_DEFAULTS[self.arch].items():
            if d.get(key) is None or key not in d:
                d[key] = list(value) if isinstance(value, tuple) else value
        return d


def train_field(name: str) -> dataclasses.Field:
    """TrainRequest's field `name` (its default, and its rule and help text in `.metadata`)."""
    return {f.name: f for f in dataclasses.fields(TrainRequest)}[name]


def _show(value) -> str:
    if isinstance(value, (tuple, list)):
        return ",".join(map(str, value)) if value else "none"
    if isinstance(value, float) and value == int(value):
        return str(int(value))
    return str(value)


def default_text(name: str) -> str:
    """What TrainRequest's field `name` defaults to, in words, as `--help` and the README's option
    table say it: the value, on/off, or the architecture's own values."""
    f = train_field(name)
    if f.default is not None:
        return ("on" if f.default else "off") if isinstance(f.default, bool) else _show(f.default)
    if f.metadata["unset"]:
        return f.metadata["unset"]
    values = ", ".join(f"{arch} {_show(ARCH_DEFAULTS[arch][name])}" for arch in ARCHITECTURES)
    return f"the architecture's ({values})"


def help_text(name: str) -> str:
    """TrainRequest's field `name`: its help text, with its default where the CLI cannot show it."""
    f = train_field(name)
    doc = f.metadata["doc"]
    return doc if f.default is not None else f"{doc} [default: {default_text(name)}]"


@dataclass
class TrainResult(_Result):
    """What a finished training job returns (and `--json` prints)."""

    job_id: str = _required(str)
    state: str = _required(str)
    test_accuracy: float = _required(float, nan_ok=True)  # NaN when nothing was scored
    test_loss: float = _required(float, nan_ok=True)
    per_class_accuracy: list = _required(list, item=None, min_len=0, max_len=10)  # fraction per digit, None: no examples
    confusion: list = _required(list, item=list, min_len=0, max_len=10)  # 10 x 10 counts, rows = true digit
    epochs: int = _required(int)
    wall_seconds: float = _required(float)  # from the job's start on the worker to its result
    train_seconds: float = _required(float)  # sum of the epochs' wall times
    model: str = _required(str)  # "NAME:VERSION", usable as --model
    arch: str = _required(str)
    model_path: str = _required(str)
    history: list = _spec([], list, item=dict, min_len=0, max_len=10**6)  # one dict per epoch
    replicas: int = _spec(1, int)
    devices: list = _spec([], list, item=str, min_len=0, max_len=1024)
    train_images: int = _spec(0, int)
    dataset: str = _spec("mnist", str)
    worker: str = _spec("", str)  # host:pid of the worker that finished the job
    members: list = _spec([], list, item=str, min_len=0, max_len=64)  # an ensemble's model files (averaged)
    member_accuracies: list = _spec([], list, item=float, min_len=0, max_len=64, nan_ok=True)  # each member's own
    warnings: list = _spec([], list, item=str, min_len=0, max_len=64)  # e.g. an accelerator option ignored on a CPU
    resumed: bool = _spec(False, bool)  # an earlier delivery was interrupted and this one went on from its backup
    # --- an ensemble fanned out over the workers (digitq.common.ensemble) ---
    member_jobs: list = _spec([], list, item=str, min_len=0, max_len=64)  # its members' job ids
    member_workers: list = _spec([], list, item=str, min_len=0, max_len=64)  # host:pid that finished each member


# --- predicting ------------------------------------------------------------------------------

MAX_CHUNK_IMAGES = 5000
"""Most images one predict task carries (784 bytes each, base64: about 5 MB)."""

PIXELS_PER_IMAGE = 28 * 28

MAX_LISTED_FILES = 1_000_000
"""Most files a --remote folder listing returns."""


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
    packed: bool = _spec(False, bool, doc="answer with PredictResult.packed_probs (clients from 2026-12 on)")

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
        _check_model_ref(self.model)


PROBS_BYTES = 10 * 4
"""One image's probabilities packed: 10 little-endian float32."""


@dataclass
class PredictResult(_Result):
    """One chunk's answer: per image, 10 probabilities or None, and an error or None.

    With `packed_probs` (asked for by PredictRequest.packed) the probabilities of the images
    without an error come as one base64 string of float32 rows, and `probs` is empty: a JSON
    list of 5,000 floats costs the worker and the client more than the inference itself. `rows()`
    reads either form."""

    model: str = _required(str)  # the NAME:VERSION that classified the chunk
    probs: list = _required(list, item=None, min_len=0, max_len=MAX_CHUNK_IMAGES)
    errors: list = _required(list, item=None, min_len=0, max_len=MAX_CHUNK_IMAGES)
    packed_probs: str | None = _spec(None, str, optional=True, max_chars=4 * (MAX_CHUNK_IMAGES * PROBS_BYTES + 2) // 3,
                                     doc="base64 of float32 [images without an error, 10], little-endian")

    def check(self) -> None:
        super().check()
        for e in self.errors:
            if e is not None and type(e) is not str:
                raise InvalidRequest(f"an error must be a string or null, got {e!r}")
        if self.packed_probs is not None:
            rows = self.errors.count(None)
            if self.probs or len(self.packed_probs) != 4 * ((rows * PROBS_BYTES + 2) // 3):
                raise InvalidRequest(f"packed_probs must be base64 of {rows} x {PROBS_BYTES} bytes, and probs empty")
            return
        if len(self.probs) != len(self.errors):
            raise InvalidRequest(f"probs has {len(self.probs)} rows but errors {len(self.errors)}")
        for row in self.probs:  # the loop is per image: kept to type checks only
            if row is not None and not (type(row) is list and len(row) == 10
                                        and all(type(p) is float or type(p) is int for p in row)):
                raise InvalidRequest(f"a row of probs must be 10 numbers or null, got {str(row)[:80]}")

    def rows(self) -> list:
        """Per image, its 10 probabilities (floats, to 6 decimals when packed) or None."""
        if self.packed_probs is None:
            return self.probs
        import base64

        import numpy as np

        packed = np.frombuffer(base64.b64decode(self.packed_probs), "<f4").reshape(-1, 10)
        return self.spread(packed, self.errors)

    @staticmethod
    def spread(probs, errors: list) -> list:
        """Per image, its row of `probs` (float array [images without an error, 10]) rounded to
        6 decimals, or None where `errors` has one. NumPy rounds all at once, to the same floats
        as round() per value (checked on 2,000,000 softmax outputs)."""
        import numpy as np

        found = iter(np.round(np.asarray(probs, np.float64), 6).tolist())
        return [next(found) if e is None else None for e in errors]

    @classmethod
    def packing(cls, model: str, probs, errors: list) -> "PredictResult":
        """The packed answer for `probs` (float array [images without an error, 10])."""
        import base64

        import numpy as np

        data = base64.b64encode(np.ascontiguousarray(probs, "<f4").tobytes()).decode("ascii")
        return cls(model=model, probs=[], errors=errors, packed_probs=data)


@dataclass
class ListRequest(_Validated):
    """`digitq predict --remote`: list a folder on the shared volume."""

    folder: str = _spec(None, str, doc="a folder below the worker's roots")
    recursive: bool = _spec(False, bool, doc="include sub-folders")


@dataclass
class ListResult(_Result):
    """The files of a --remote folder, relative to it, in sorted order."""

    folder: str = _required(str)  # the folder as the worker resolved it
    files: list = _required(list, item=str, min_len=0, max_len=MAX_LISTED_FILES + 1)


@dataclass
class PredictSummary(_Result):
    """What a `digitq predict` run stores as its job's result (and `--json` prints)."""

    job_id: str = _required(str)
    classified: int = _required(int)
    failed: int = _required(int)
    output: str = _required(str)  # the file written, or "-" for stdout
    seconds: float = _required(float)
    images_per_second: float = _required(float)
    gallery: str | None = _spec(None, str, optional=True)  # the contact sheet written, with --gallery
    model: str | None = _spec(None, str, optional=True)  # the NAME:VERSION that classified the images
    flagged: int = _spec(0, int)  # rows with a flag (blank, not-one-digit, unsure, not-a-number): counted in classified

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        for key in ("gallery", "model"):
            if d[key] is None:
                del d[key]
        return d


# --- evaluating and reporting ----------------------------------------------------------------


@dataclass
class EvaluateRequest(_Validated):
    """`digitq evaluate`: score a registered model on MNIST's test set or a labelled folder."""

    model: str = _spec("digits", str, doc="NAME or NAME:VERSION.")
    dataset: str = _spec("mnist-test", str, doc="mnist-test, or a labelled folder (sub-folders 0..9) on the shared volume.")
    test_size: int | None = _spec(None, int, 1, 10000, optional=True, doc="Only the first N MNIST test images.")

    def check(self) -> None:
        super().check()
        _check_model_ref(self.model)


@dataclass
class EvaluateResult(_Result):
    """A registered model's scores on a test set."""

    model: str = _required(str)  # NAME:VERSION
    dataset: str = _required(str)
    images: int = _required(int)
    accuracy: float = _required(float)  # fraction
    loss: float = _required(float)  # mean cross-entropy, nats
    per_class_accuracy: list = _required(list, item=None, min_len=10, max_len=10)  # None: a digit with no examples
    confusion: list = _required(list, item=list, min_len=10, max_len=10)  # 10 x 10 counts, rows = true digit
    skipped: list = _spec([], list, item=list, min_len=0, max_len=10**6)  # [path, reason] of unreadable files


def check_report_target(target: str) -> str:
    """A job id, NAME or NAME:VERSION; anything else fails here, before it is queued."""
    if ":" in target:
        _check_model_ref(target)
        return target
    if not (MODEL_NAME_RE.match(target) or JOB_ID_RE.match(target)):
        raise InvalidRequest(f"invalid report target {target!r}: give a job id, NAME or NAME:VERSION")
    return target


@dataclass
class ReportRequest(_Validated):
    """`digitq report`: draw a training job's report."""

    target: str = _spec(None, str, doc="a job id, or a model NAME[:VERSION] (its training job)")

    def check(self) -> None:
        super().check()
        check_report_target(self.target)


@dataclass
class ReportResult(_Result):
    """A drawn report: the job, its model, the folder on the shared volume, and the files."""

    job_id: str = _required(str)
    model: str | None = _spec(None, str, optional=True)  # NAME:VERSION, when the job registered one
    folder: str = _required(str)  # <job folder>/report on the worker's shared volume
    files: dict = _required(dict)  # file name -> base64 of its bytes


def _check_model_ref(ref: str) -> None:
    from digitq.common.registry import parse_model_ref

    parse_model_ref(ref)
