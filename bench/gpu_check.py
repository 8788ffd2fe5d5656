#!/usr/bin/env python3
"""The GPU check: digitq's default recipe under KERAS_BACKEND=jax on one GPU, from MNIST in memory.

It trains the worker's own model and recipe (`resolve_hparams`, `build_model` and `compile_model`
from digitq.worker.model, the pixel statistics of digitq.worker.train, the split of
digitq.worker.data, the "shift" augmentation as `augment.make_numpy_shifter`), evaluates the test
set after every epoch, and prints one table: seconds of training to 99.0% and 99.5% test accuracy,
training images/s at the default batch and at larger ones (square-root-scaled peak learning rate),
with bf16 mixed precision off and on, and inference images/s. It stops itself within its time
budget (`--budget-s`, default 240 s: rows that no longer fit are marked, and the table still
prints), and writes the table as JSON to $OUT/gpu_check.json when OUT is set (and to --out).

    bash bench/gpu_check.sh                 # on the GPU machine: installs .whl/, then this
    python bench/gpu_check.py --quick       # anywhere JAX is: 2,000 images, 1 epoch, batch 256

bench/gpu_check.sh's header says how to prepare `.mnist/` and `.whl/` and run it on the GPU
machine. Nothing here imports TensorFlow: only what digitq.worker.model, .augment, .data and
.train import at module level, which the unit tests check
(tests/unit/test_backend_jax.py, tests/unit/test_gpu_check.py).

Timing: an epoch's seconds are the host-side shuffle and shift of the epoch's images plus
`model.fit` over them (one fit call per epoch; the optimizer and its schedule carry on across
calls); the test evaluation is not counted. The first epoch includes XLA's compilation,
reported separately as `compile_s` (first epoch minus the median later epoch).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

BUDGET_S = 240
"""Seconds for everything after start-up; gpu_check.sh kills the process at 285 s, so that pip,
JAX's start and this fit in the check's 5 minutes."""

BATCHES = (256, 1024, 4096)
"""Global batch sizes trained, the recipe's default (256) first."""

PRECISIONS = ("float32", "bf16")
"""float32, and Keras' mixed_bfloat16 policy (bf16 compute, float32 weights; no loss scaling)."""

INFER_BATCHES = (1024, 8192)
"""Batch sizes of the inference measurement (models of the default batch only)."""

INFER_SECONDS = 1.0
"""Seconds of repeated `predict` calls per inference measurement, after a warm-up call."""

TARGETS = (0.990, 0.995)
"""Test accuracies whose time is reported."""

EVAL_BATCH = 1024
"""Images per `predict` step when evaluating after each epoch (the worker's PREDICT_BATCH)."""


@dataclasses.dataclass
class RunResult:
    """One training run of the recipe at one batch size and precision."""

    batch: int
    precision: str
    peak_lr: float
    epochs: list = dataclasses.field(default_factory=list)  # {epoch, seconds, elapsed, test_accuracy}
    status: str = "not run"  # running, done, stopped ..., interrupted ..., skipped ...
    inference: dict = dataclasses.field(default_factory=dict)  # batch -> images/s

    def time_to(self, target: float) -> float | None:
        """Training seconds until the test accuracy first reached `target` (None: not reached)."""
        return next((e["elapsed"] for e in self.epochs if e["test_accuracy"] >= target), None)

    @property
    def compile_s(self) -> float | None:
        if len(self.epochs) < 2:
            return None
        later = sorted(e["seconds"] for e in self.epochs[1:])
        return max(self.epochs[0]["seconds"] - later[len(later) // 2], 0.0)

    @property
    def steady_epoch_s(self) -> float | None:
        """Median epoch seconds after the first (the first alone when there is only one)."""
        seconds = sorted(e["seconds"] for e in (self.epochs[1:] or self.epochs))
        return seconds[len(seconds) // 2] if seconds else None

    def to_dict(self, train_images: int) -> dict:
        steady = self.steady_epoch_s
        return {**dataclasses.asdict(self), "to_99_0_s": self.time_to(0.990), "to_99_5_s": self.time_to(0.995),
                "final_test_accuracy": self.epochs[-1]["test_accuracy"] if self.epochs else None,
                "compile_s": self.compile_s, "steady_epoch_s": steady,
                "train_images_per_s": round(train_images / steady, 1) if steady else None}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="a smoke run for CPUs: 2,000 training and 1,024 test images, 1 epoch, batch 256, "
                        "float32, inference at batch 1024 only")
    p.add_argument("--mnist", type=Path, default=None,
                   help="folder with the four MNIST .gz files (default: .mnist/ in the checkout, else "
                        "$DIGITQ_DATA_DIR/mnist, else ../shared/data/mnist)")
    p.add_argument("--epochs", type=int, default=None, help="default: the recipe's (TrainRequest's)")
    p.add_argument("--train-size", type=int, default=None)
    p.add_argument("--test-size", type=int, default=None)
    p.add_argument("--batches", default=None,
                   help=f"comma-separated global batches (default {','.join(map(str, BATCHES))})")
    p.add_argument("--precisions", default=None, help=f"comma-separated (default {','.join(PRECISIONS)})")
    p.add_argument("--budget-s", type=float, default=BUDGET_S, help="stop within this many seconds")
    p.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = p.parse_args(argv)
    if args.quick:
        args.train_size = args.train_size or 2000
        args.test_size = args.test_size or 1024  # = the inference batch: one compiled predict shape
        args.epochs = args.epochs or 1
        args.batches = args.batches or "256"
        args.precisions = args.precisions or "float32"
    args.batches = tuple(int(b) for b in (args.batches or ",".join(map(str, BATCHES))).split(","))
    args.precisions = tuple((args.precisions or ",".join(PRECISIONS)).split(","))
    if not set(args.precisions) <= set(PRECISIONS):
        p.error(f"--precisions: choose from {PRECISIONS}")
    args.infer_batches = INFER_BATCHES[:1] if args.quick else INFER_BATCHES
    return args


# --- set-up -----------------------------------------------------------------------------------


def ensure_digitq_importable() -> str:
    """Make `digitq.*` importable from this checkout when it is not installed (the GPU machine):
    a temporary `digitq/` of links to common/ and worker/ on sys.path. Returns where it comes from."""
    import importlib.util

    try:
        spec = importlib.util.find_spec("digitq.worker")
    except ModuleNotFoundError:
        spec = None
    if spec is None:
        root = Path(tempfile.mkdtemp(prefix="digitq-src-")) / "digitq"
        root.mkdir()
        for name in ("common", "worker"):
            (root / name).symlink_to(REPO / name)
        sys.path.insert(0, str(root.parent))
        spec = importlib.util.find_spec("digitq.worker")
    return str(Path(list(spec.submodule_search_locations)[0]).resolve())


def find_mnist(explicit: Path | None) -> Path:
    candidates = [explicit] if explicit else [
        REPO / ".mnist", Path(os.environ.get("DIGITQ_DATA_DIR") or REPO.parent / "shared" / "data") / "mnist"]
    for folder in candidates:
        if (folder / "train-images-idx3-ubyte.gz").is_file():
            return folder.resolve()
    sys.exit(f"error: no MNIST .gz files in {', '.join(map(str, candidates))}: copy the four files into .mnist/ "
             "(see bench/gpu_check.sh)")


def load_split(mnist_dir: Path, request):
    """The worker's MNIST split for `request` (digitq.worker.data.load_dataset), from `mnist_dir`."""
    from digitq.common.settings import Settings
    from digitq.worker import data

    data_dir = Path(tempfile.mkdtemp(prefix="digitq-gpu-check-"))
    (data_dir / "mnist").symlink_to(mnist_dir)
    settings = Settings(home=data_dir, data_dir=data_dir, broker_url=None, result_backend=None, mnist_mirrors=())
    return data.load_dataset(settings, "mnist", request.validation_size, request.train_size, request.test_size,
                             request.seed)


def describe_device() -> dict:
    import jax
    import keras

    devices = jax.devices()
    return {"backend": jax.default_backend(), "devices": [getattr(d, "device_kind", str(d)) for d in devices],
            "jax": jax.__version__, "keras": keras.__version__, "keras_backend": keras.backend.backend(),
            "python": sys.version.split()[0]}


# --- training and inference -----------------------------------------------------------------


def scaled_lr(hp, batch: int) -> float:
    """The recipe's peak learning rate for a global `batch`: Adam's usual square-root rule."""
    return hp.learning_rate * math.sqrt(batch / hp.batch_size)


def train_run(ds, request, run: RunResult, deadline: float, on_epoch=lambda: None):
    """Train the recipe at `run.batch` (global) and `run.precision`, evaluating after every epoch
    into `run.epochs` (then calling `on_epoch()`); stop early (`run.status` says so) when the next
    epoch would not end before `deadline`, or in the middle of one that runs past it. Returns the
    trained model."""
    import keras
    import numpy as np

    from digitq.worker.augment import make_numpy_shifter
    from digitq.worker.model import build_model, compile_model, ema_weights, keep_average, resolve_hparams
    from digitq.worker.train import _pixel_stats

    base = resolve_hparams(request)
    if base.augment not in ("none", "shift"):
        raise SystemExit(f"error: the check has a NumPy twin of the 'shift' augmentation only, not {base.augment!r}")
    batch, precision = run.batch, run.precision
    hp = dataclasses.replace(base, batch_size=batch, learning_rate=run.peak_lr)
    run.status = "running"
    n = len(ds.train)
    steps_per_epoch = math.ceil(n / batch)
    mean, std = _pixel_stats(ds.train.x, request.standardize)
    keras.utils.set_random_seed(request.seed)
    keras.mixed_precision.set_global_policy("mixed_bfloat16" if precision == "bf16" else "float32")
    try:
        model = build_model(hp, mean, std)
        compile_model(model, hp, steps_per_epoch * request.epochs)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    shift = make_numpy_shifter(request.seed) if hp.augment == "shift" else None
    one_hot = np.eye(10, dtype=np.float32)[ds.train.y]
    order_rng = np.random.default_rng(request.seed)
    test_x = ds.test.x[..., None]

    class Deadline(keras.callbacks.Callback):
        """Ends `fit` at the first step that starts past the deadline (the check's last resort;
        nothing interrupts a step or XLA's compilation, gpu_check.sh's hard limit aside). A batch
        *begin* hook: one on batch end would make Keras fetch every step's logs to the host,
        waiting for the device each step."""

        def on_train_batch_begin(self, batch, logs=None):
            if time.monotonic() > deadline:
                self.model.stop_training = True

    deadline_callback = Deadline()
    elapsed = 0.0
    for epoch in range(request.epochs):
        last = run.epochs[-1]["seconds"] + run.epochs[-1]["eval_s"] if run.epochs else 0.0
        if run.epochs and time.monotonic() + 1.5 * last > deadline:
            run.status = f"stopped after epoch {epoch} of {request.epochs}: time budget"
            break
        t = time.perf_counter()
        order = order_rng.permutation(n) if request.shuffle else np.arange(n)
        x, y = ds.train.x[order][..., None], one_hot[order]
        if shift is not None:
            x = shift(x)
        model.fit(x, y, batch_size=batch, epochs=epoch + 1, initial_epoch=epoch, shuffle=False, verbose=0,
                  callbacks=[deadline_callback])
        seconds = time.perf_counter() - t
        if model.stop_training:
            run.status = f"interrupted in epoch {epoch + 1} of {request.epochs}: time budget"
            break
        elapsed += seconds
        t = time.perf_counter()
        with ema_weights(model):  # the weights' moving average, where the recipe keeps one, as the worker scores
            probs = model.predict(test_x, batch_size=EVAL_BATCH, verbose=0)
        accuracy = float((np.asarray(probs).argmax(axis=1) == ds.test.y).mean())
        run.epochs.append({"epoch": epoch + 1, "seconds": round(seconds, 3), "elapsed": round(elapsed, 3),
                           "test_accuracy": accuracy, "eval_s": round(time.perf_counter() - t, 3)})
        print(f"  batch {batch} {precision}: epoch {epoch + 1} {seconds:.2f} s, test accuracy {accuracy:.4f}",
              flush=True)
        on_epoch()
    if run.status == "running":
        run.status = "done"
    keep_average(model)  # the model inference is measured on
    return model


def inference_speed(model, images, batch: int) -> float:
    """Images/s of `model.predict` at `batch` over `images` (a multiple of `batch`), after one
    warm-up call that compiles, repeated for at least INFER_SECONDS."""
    model.predict(images[:batch], batch_size=batch, verbose=0)
    done, t = 0, time.perf_counter()
    while time.perf_counter() - t < INFER_SECONDS:
        model.predict(images, batch_size=batch, verbose=0)
        done += len(images)
    return done / (time.perf_counter() - t)


def infer_images(ds, largest: int):
    """All training and test images, cut to a multiple of `largest` (one compiled batch shape)."""
    import numpy as np

    images = np.concatenate([ds.train.x, ds.test.x])[..., None]
    return np.resize(images, (max(len(images) // largest, 1) * largest, *images.shape[1:]))


# --- report -----------------------------------------------------------------------------------


def format_table(report: dict) -> str:
    """The one table (Markdown), with a line about the recipe and machine above it."""
    d, c = report["device"], report["config"]

    def num(v, fmt):
        return "-" if v is None else format(v, fmt)

    head = (f"digitq GPU check: {c['arch']} recipe, {c['epochs']} epoch(s) on {c['train_images']:,} images, "
            f"test {c['test_images']:,}; KERAS_BACKEND={d['keras_backend']} on {d['backend']} "
            f"({', '.join(d['devices'])}); jax {d['jax']}, keras {d['keras']}, Python {d['python']}")
    infer = [f"infer/s b{b}" for b in report["config"]["infer_batches"]]
    cols = ["batch", "peak LR", "precision", "to 99.0% s", "to 99.5% s", "final acc", "compile s",
            "steady epoch s", "train img/s", *infer, "status"]
    rows = [cols, ["---"] * len(cols)]
    for r in report["runs"]:
        rows.append([str(r["batch"]), f"{r['peak_lr']:.2g}", r["precision"], num(r["to_99_0_s"], ".1f"),
                     num(r["to_99_5_s"], ".1f"), num(r["final_test_accuracy"], ".4f"), num(r["compile_s"], ".1f"),
                     num(r["steady_epoch_s"], ".2f"), num(r["train_images_per_s"], ",.0f"),
                     *[num(r["inference"].get(str(b)), ",.0f") for b in report["config"]["infer_batches"]],
                     r["status"]])
    table = "\n".join("| " + " | ".join(row) + " |" for row in rows)
    tail = (f"elapsed {report['elapsed_s']:.0f} s of a {report['budget_s']:.0f} s budget"
            f"{'' if report['complete'] else ' (incomplete: ' + report['stopped'] + ')'}")
    return f"{head}\n\n{table}\n\n{tail}"


def write_json(report: dict, path: Path | None) -> list[Path]:
    targets = [p for p in (path, Path(os.environ["OUT"]) / "gpu_check.json" if os.environ.get("OUT") else None) if p]
    for p in targets:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(report, indent=1) + "\n")
    return targets


# --- main -------------------------------------------------------------------------------------


def main(argv=None) -> int:
    started = time.monotonic()
    args = parse_args(argv)
    deadline = started + args.budget_s
    os.environ.setdefault("KERAS_BACKEND", "jax")  # here, not at import: tests import this module
    source = ensure_digitq_importable()
    import keras

    if keras.backend.backend() != "jax":
        sys.exit(f"error: the GPU check runs Keras on JAX; KERAS_BACKEND is {keras.backend.backend()!r}")
    from digitq.common.schemas import TrainRequest
    from digitq.worker.model import resolve_hparams

    overrides = dict(epochs=args.epochs, train_size=args.train_size, test_size=args.test_size)
    request = TrainRequest.from_dict({k: v for k, v in overrides.items() if v is not None})
    ds = load_split(find_mnist(args.mnist), request)
    hp = resolve_hparams(request)
    report = {"device": describe_device(), "budget_s": args.budget_s, "digitq_from": source, "runs": [],
              "config": {"arch": hp.arch, "epochs": request.epochs, "train_images": len(ds.train),
                         "test_images": len(ds.test), "default_batch": hp.batch_size, "peak_lr": hp.learning_rate,
                         "lr_scaling": "sqrt(batch / default batch)", "augment": hp.augment,
                         "infer_batches": list(args.infer_batches)},
              "complete": True, "stopped": ""}
    d = report["device"]
    print(f"GPU check on {d['backend']} ({', '.join(d['devices'])}), jax {d['jax']}, keras {d['keras']}; "
          f"digitq from {source}", flush=True)
    images = infer_images(ds, max(args.infer_batches))
    runs = [RunResult(b, p, scaled_lr(hp, b)) for b in args.batches for p in args.precisions]
    for run in runs:
        if run is not runs[0] and time.monotonic() + 10 > deadline:
            run.status = "skipped: time budget"
            continue
        model = train_run(ds, request, run, deadline, on_epoch=lambda: _save(report, runs, started, args.out))
        if run.batch == hp.batch_size:
            for b in args.infer_batches:
                if time.monotonic() + 3 * INFER_SECONDS > deadline:
                    break
                run.inference[str(b)] = round(inference_speed(model, images, b), 1)
        del model
        keras.backend.clear_session()
    paths = _save(report, runs, started, args.out)
    print(format_table(report), flush=True)
    for path in paths:
        print(f"JSON: {path}")
    return 0


def _save(report: dict, runs: list, started: float, out: Path | None) -> list[Path]:
    """Bring `report` up to date with `runs` and write its JSON (after every epoch too, so that
    gpu_check.sh's hard limit, if it ever strikes, still leaves the epochs done)."""
    report["runs"] = [run.to_dict(report["config"]["train_images"]) for run in runs]
    stopped = [run.status for run in runs if run.status not in ("done", "running", "not run")]
    report.update(complete=not stopped and all(run.status == "done" for run in runs),
                  stopped="time budget" if stopped else "", elapsed_s=round(time.monotonic() - started, 1))
    return write_json(report, out)


if __name__ == "__main__":
    sys.exit(main())
