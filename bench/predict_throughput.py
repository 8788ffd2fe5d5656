#!/usr/bin/env python3
"""Prediction throughput of `digitq predict` against bare Keras and the tutorials' per-image loop.

One run on one machine measures, on the same trained `.keras` model and the same N MNIST
test digits (written as real PNG files, dark ink on white, like scans):

  (a) bare Keras   model.predict on the decoded 28x28 uint8 test arrays (read from IDX), in one
                   call with a large batch; model loading and the first (tracing) call excluded
  (b) tutorial     per file: PIL open, convert('L'), resize 28x28, np.invert, reshape
                   (1,28,28,1), model.predict one image at a time; measured on the first
                   --loop-sample files (it is slow) and reported as a rate
  (c) digitq       `digitq predict FOLDER --model REF -o out.csv` through the embedded stack,
                   warm (worker already has the model loaded), wall clock of the subprocess from
                   start to exit; images/s = files / seconds
  (d) bare Keras   what a user's script does with the same folder: every PNG decoded with PIL
      on PNGs      (convert('L'), inverted), stacked, one model.predict with a large batch;
                   decoding and inference timed, model loading and the first call excluded
  (e) bare Keras   the same as a script a user runs: a fresh Python process that imports Keras,
      script       loads the model, decodes the PNGs, predicts and writes a CSV; its wall clock
                   from start to exit (what `digitq predict`, (c), is timed as)

and reports (c)/(a) (goal >= 0.5), (c)/(b) (goal >= 20), (c)/(d) and (c)/(e) (goal >= 1.0), accuracies against the MNIST
labels, and a small breakdown of where (c)'s time goes (client start-up, client-side
`load_images` alone, the worker's busy time from its log).

Setup: a fresh DIGITQ_HOME (temp dir, or --home), DIGITQ_DATA_DIR = --data-dir, no
DIGITQ_BROKER_URL (so the embedded redis-server + worker start), a model trained through
`digitq submit-train --json` (or --model-ref to reuse one registered under --home). The
embedded stack is stopped at the end (`digitq local down`) unless --keep.

    .venv/bin/python bench/predict_throughput.py                       # the real run (10,000 PNGs)
    .venv/bin/python bench/predict_throughput.py -n 500 --loop-sample 50 --repeats 1 \\
        --train-args "--epochs 1 --train-size 3000 --validation-size 300 --test-size 300"   # smoke

TensorFlow is imported in this process only for (a) and (b), after the (c) runs.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import os
import platform
import re
import shlex
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from benchkit.harness import digitq_argv  # bench/ is on sys.path: this script's folder
from benchkit.stamps import cpu_model
from benchkit.store import last_json as _last_json

REPO = Path(__file__).resolve().parents[1]
GOAL_VS_KERAS = 0.5
GOAL_VS_LOOP = 20.0
GOAL_VS_KERAS_FILES = 1.0
DEFAULT_CHUNK = 500
"""`digitq predict`'s default --chunk-size (digitq.client.predict.DEFAULT_CHUNK)."""


# --- setup -------------------------------------------------------------------------------------


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-n", "--n", type=int, default=10_000, help="MNIST test digits to write as PNGs (max 10000)")
    p.add_argument("--loop-sample", type=int, default=300, help="files the per-image loop (b) classifies")
    p.add_argument("--repeats", type=int, default=3, help="timed repeats of (a) and (c); the median is reported")
    p.add_argument("--loop-repeats", type=int, default=1, help="timed repeats of (b)")
    p.add_argument("--keras-batch-size", type=int, default=1024, help="batch size of (a)'s single model.predict call")
    p.add_argument("--loop-call", choices=("predict", "call"), default="predict",
                   help="(b) classifies with model.predict(x) (most tutorials) or model(x)")
    p.add_argument("--png-size", type=int, default=28,
                   help="side of the written PNGs in pixels (28 = MNIST size; larger upsamples like a scan)")
    p.add_argument("--chunk-size", type=int, default=None, help="pass --chunk-size to digitq predict (default: its own)")
    p.add_argument("--jobs", type=int, default=None,
                   help="pass --jobs (client preprocessing processes) to digitq predict (default: its own)")
    p.add_argument("--warm-files", type=int, default=None,
                   help="files of the untimed warm-up `digitq predict` run (default: one full chunk + 100, so the "
                        "worker has loaded the model and run both a full and a partial chunk)")
    p.add_argument("--out", default="bench/results/predict.json", help="JSON results file (relative to the repo root)")
    p.add_argument("--home", default=None, help="DIGITQ_HOME to use (default: a fresh temp dir)")
    p.add_argument("--data-dir", default=None, help="DIGITQ_DATA_DIR (default: ../shared/data from the repo root)")
    p.add_argument("--train-args", default="--epochs 1",
                   help="arguments of `digitq submit-train` (--json is added, and --name bench-predict unless given)")
    p.add_argument("--model-ref", default=None, help="reuse this registered model (NAME:VERSION, under --home) instead of training")
    p.add_argument("--no-profile", action="store_true", help="skip the client-side load_images timing")
    p.add_argument("--keep", action="store_true", help="leave the embedded stack running and keep the temp folders")
    p.add_argument("--timeout", type=float, default=3600, help="seconds any one CLI call may take")
    args = p.parse_args(argv)
    if not 1 <= args.n <= 10_000:
        p.error("-n must be between 1 and 10000")
    if args.repeats < 1 or args.loop_repeats < 1 or args.loop_sample < 1:
        p.error("--repeats, --loop-repeats and --loop-sample must be >= 1")
    args.loop_sample = min(args.loop_sample, args.n)
    if args.warm_files is None:
        args.warm_files = (args.chunk_size or DEFAULT_CHUNK) + 100
    args.warm_files = max(1, min(args.warm_files, args.n))
    return args


def machine_info() -> dict:
    model = cpu_model()
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    return {"cpu": model, "logical_cpus": os.cpu_count(), "usable_cpus": usable, "python": platform.python_version(),
            "platform": platform.platform(), "load_average_start": list(os.getloadavg())}


def read_idx(path: Path) -> np.ndarray:
    """A gzip-compressed or raw IDX file (unsigned bytes, as MNIST uses)."""
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    if raw[:2] != b"\0\0" or raw[2] != 0x08:
        raise SystemExit(f"{path}: not an unsigned-byte IDX file")
    ndim = raw[3]
    dims = struct.unpack(">" + "I" * ndim, raw[4:4 + 4 * ndim])
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def find_mnist(data_dir: Path, base: str) -> Path:
    for name in (base + ".gz", base):
        if (data_dir / "mnist" / name).exists():
            return data_dir / "mnist" / name
    raise SystemExit(f"{data_dir / 'mnist'} holds no {base}(.gz); pass --data-dir")


def write_pngs(images: np.ndarray, folder: Path, size: int) -> list[Path]:
    """Each digit as an 8-bit greyscale PNG, dark ink on white, named 00000.png, 00001.png, ..."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, img in enumerate(images):
        im = Image.fromarray(255 - img)  # uint8 2-D: mode "L"
        if size != 28:
            im = im.resize((size, size), Image.Resampling.BICUBIC)
        path = folder / f"{i:05d}.png"
        im.save(path)
        paths.append(path)
    return paths


# --- the CLI -----------------------------------------------------------------------------------


def cli(args: list[str], env: dict, timeout: float, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(digitq_argv() + args, env=env, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)
    if check and proc.returncode != 0:
        raise SystemExit(f"`digitq {' '.join(args)}` exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    return proc


def last_json(text: str):
    """The last JSON line of a command's output; none stops the script."""
    return _last_json(text, error=SystemExit)


def train_model(env: dict, args) -> dict:
    extra = shlex.split(args.train_args)
    if "--name" not in extra and not any(a.startswith("--name=") for a in extra):
        extra += ["--name", "bench-predict"]
    started = time.monotonic()
    res = last_json(cli(["submit-train", "--json", *extra], env, args.timeout).stdout)
    return {"model": res["model"], "path": res["model_path"], "test_accuracy": res.get("test_accuracy"),
            "train_args": extra, "train_wall_seconds": round(time.monotonic() - started, 1),
            "train_images": res.get("train_images"), "devices": res.get("devices")}


def registered_model(env: dict, ref: str, timeout: float) -> dict:
    rec = last_json(cli(["models", "show", ref, "--json"], env, timeout).stdout)
    if rec.get("members"):
        raise SystemExit(f"{ref} is an ensemble; (a) and (b) need a single .keras model")
    return {"model": f"{rec['name']}:{rec['version']}", "path": rec["path"], "test_accuracy": rec.get("test_accuracy")}


def worker_log_offset(home: Path) -> int:
    try:
        return (home / "local" / "worker.log").stat().st_size
    except OSError:
        return 0


TASK_DONE_RE = re.compile(r"Task digitq\.predict\[[^\]]+\] succeeded in ([0-9.eE+-]+)s")


def worker_busy_seconds(home: Path, offset: int) -> tuple[float, int]:
    """Sum and count of the predict tasks' run times that the worker logged after `offset`."""
    try:
        with open(home / "local" / "worker.log", "rb") as f:
            f.seek(offset)
            text = f.read().decode(errors="replace")
    except OSError:
        return float("nan"), 0
    times = [float(m.group(1)) for m in TASK_DONE_RE.finditer(text)]
    return sum(times), len(times)


def run_predict(folder: Path, ref: str, out_csv: Path, env: dict, args, home: Path) -> dict:
    """One `digitq predict` subprocess; wall clock from start to exit."""
    argv = digitq_argv() + ["predict", str(folder), "--model", ref, "-o", str(out_csv), "--json"]
    if args.chunk_size:
        argv += ["--chunk-size", str(args.chunk_size)]
    if args.jobs is not None:
        argv += ["--jobs", str(args.jobs)]
    offset = worker_log_offset(home)
    started = time.perf_counter()
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=args.timeout, stdin=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"digitq predict exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    time.sleep(0.2)  # let the worker's last log line land
    busy, tasks = worker_busy_seconds(home, offset)
    summary = last_json(proc.stdout)
    return {"wall_seconds": wall, "cli_reported_seconds": summary.get("seconds"), "classified": summary.get("classified"),
            "failed": summary.get("failed"), "worker_busy_seconds": busy, "worker_tasks": tasks}


def csv_accuracy(out_csv: Path, labels: np.ndarray) -> dict:
    rows = correct = errors = 0
    in_order = True
    with open(out_csv, newline="") as f:
        for i, row in enumerate(csv.DictReader(f)):
            rows += 1
            idx = int(Path(row["path"]).stem)
            in_order &= idx == i
            if row.get("error"):
                errors += 1
            elif int(row["digit"]) == int(labels[idx]):
                correct += 1
    return {"rows": rows, "errors": errors, "correct": correct, "accuracy": correct / rows if rows else float("nan"),
            "in_file_order": in_order}


# --- in-process measurements ---------------------------------------------------------------------


def profile_load_image(files: list[Path], chunk: int) -> float:
    """Seconds for digitq's client-side preprocessing alone, one process: `load_images` over every
    file, a chunk at a time, as `digitq predict`'s preprocessing processes call it."""
    from digitq.common.images import load_images

    started = time.perf_counter()
    for i in range(0, len(files), chunk):
        load_images(files[i:i + chunk])
    return time.perf_counter() - started


def load_keras_model(path: str):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from digitq.worker.devices import prefer_onednn

    prefer_onednn()  # before TensorFlow starts: the same CPU kernels as the worker
    import keras
    import tensorflow as tf

    return keras.models.load_model(path, compile=False), tf.__version__, keras.__version__


def _timed_probs(run, y: np.ndarray, repeats: int) -> dict:
    """`run()` (-> probabilities) timed `repeats` times; the last run's accuracy against `y`."""
    times, probs = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        probs = run()
        times.append(time.perf_counter() - started)
    return {"times": times, "accuracy": float(np.mean(np.argmax(probs, axis=1) == y[: len(probs)]))}


def bench_keras(model, x: np.ndarray, y: np.ndarray, batch: int, repeats: int) -> dict:
    inputs = x[..., None]
    model.predict(inputs, batch_size=batch, verbose=0)  # first call (tracing, kernel set-up): not timed
    return _timed_probs(lambda: model.predict(inputs, batch_size=batch, verbose=0), y, repeats)


def bench_keras_files(model, files: list[Path], y: np.ndarray, batch: int, repeats: int) -> dict:
    """(d): decode every PNG (PIL), invert to MNIST's white-on-black, one model.predict."""

    def run():
        x = np.stack([np.asarray(Image.open(p).convert("L")) for p in files])
        return model.predict((255 - x)[..., None], batch_size=batch, verbose=0)

    return _timed_probs(run, y, repeats)


BARE_SCRIPT = """
import csv, sys
from pathlib import Path
import numpy as np
from PIL import Image
import keras
model = keras.models.load_model(sys.argv[1], compile=False)
files = sorted(Path(sys.argv[2]).glob("*.png"))
x = np.stack([np.asarray(Image.open(p).convert("L")) for p in files])
probs = model.predict((255 - x)[..., None], batch_size=int(sys.argv[4]), verbose=0)
with open(sys.argv[3], "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["path", "digit", "confidence"] + [f"p{d}" for d in range(10)])
    for p, row in zip(files, probs.round(6).tolist()):
        w.writerow([p.name, int(np.argmax(row)), max(row)] + row)
"""
"""(e): what a user would write instead of `digitq predict` (the worker's oneDNN setting, as (a) and (d))."""


def bench_bare_script(model_path: str, folder: Path, out_csv: Path, labels: np.ndarray, batch: int,
                      repeats: int) -> dict:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    env.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        proc = subprocess.run([sys.executable, "-c", BARE_SCRIPT, model_path, str(folder), str(out_csv), str(batch)],
                              env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        times.append(time.perf_counter() - started)
        if proc.returncode != 0:
            raise SystemExit(f"the bare Keras script exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    return {"times": times, **csv_accuracy(out_csv, labels)}


def bench_loop(model, files: list[Path], y: np.ndarray, repeats: int, call: str) -> dict:
    """The classic tutorial: one file, one model call at a time."""

    def classify(path: Path) -> int:
        img = Image.open(path).convert("L")
        img = img.resize((28, 28))
        x = np.invert(np.array(img)).reshape(1, 28, 28, 1)
        probs = model.predict(x, verbose=0) if call == "predict" else np.asarray(model(x))
        return int(np.argmax(probs))

    classify(files[0])  # the first call traces; not timed
    times, preds = [], []
    for _ in range(repeats):
        started = time.perf_counter()
        preds = [classify(p) for p in files]
        times.append(time.perf_counter() - started)
    acc = float(np.mean(np.array(preds) == y[: len(files)]))
    return {"times": times, "accuracy": acc}


# --- report --------------------------------------------------------------------------------------


def fmt_rate(x) -> str:
    return f"{x:,.0f}" if x is not None and x == x else "-"


def result_tables(res: dict) -> list[str]:
    """The (a)/(b)/(c) table and the ratio table, as Markdown lines (the suite's report uses them too)."""
    r = res["results"]
    lines = ["| measurement | images | seconds (median) | images/s | accuracy | notes |",
             "| --- | ---: | ---: | ---: | ---: | --- |"]
    for key, label in (("a", "(a) bare Keras `model.predict`"), ("b", "(b) tutorial per-image loop"),
                       ("c", "(c) `digitq predict` end to end"), ("d", "(d) bare Keras on the PNG files"),
                       ("e", "(e) bare Keras script, a fresh process")):
        if key not in r:
            continue
        e = r[key]
        acc = f"{e['accuracy'] * 100:.2f}%" if e.get("accuracy") is not None else "-"
        lines.append(f"| {label} | {e['images']:,} | {e['median_seconds']:.3f} | {fmt_rate(e['images_per_second'])} | "
                     f"{acc} | {e['note']} |")
    lines += ["", "| ratio | value | goal | met |", "| --- | ---: | ---: | --- |"]
    for key, label in (("c_over_a", "(c) / (a)"), ("c_over_b", "(c) / (b)"), ("c_over_d", "(c) / (d)"),
                       ("c_over_e", "(c) / (e)")):
        if key not in res["goals"]:
            continue
        g = res["goals"][key]
        lines.append(f"| {label} | {g['value']:.3f} | >= {g['goal']:g} | {'yes' if g['met'] else 'NO'} |")
    return lines


def render(res: dict) -> str:
    m, r = res["machine"], res["results"]
    lines = [
        f"## digitq predict throughput ({res['n']:,} MNIST test digits as {res['png_size']}x{res['png_size']} PNGs, dark on white)",
        "",
        f"machine: {m['cpu']}, {m['logical_cpus']} logical CPUs ({m['usable_cpus']} usable), "
        f"TensorFlow {m.get('tensorflow', '?')}, Keras {m.get('keras', '?')}, Python {m['python']}; "
        f"load average at start {m['load_average_start'][0]:.2f}, at end {m['load_average_end'][0]:.2f}",
        f"model: {res['model']['model']} ({res['model']['path']})",
    ]
    before = m["load_average_start"][0]
    if before > 0.5 * m["usable_cpus"]:
        lines.append(f"warning: the machine was already busy before this run (1-minute load average {before:.2f} on "
                     f"{m['usable_cpus']} CPUs): other processes shared the cores, so the rates are noisy; "
                     "rerun on a quiet machine")
    lines += [""] + result_tables(res)
    if res["n"] < 10_000:
        lines += ["", f"note: N = {res['n']:,} < 10,000: (c)'s fixed costs (client start-up, preprocessing the first "
                  "chunk before the worker can start, waiting for the last one) weigh more than on the full run."]
    p = res.get("profile")
    if p:
        lines += ["", "Where (c)'s time goes (median run):", "",
                  "| part | seconds | share of (c) wall |", "| --- | ---: | ---: |"]
        wall = r["c"]["median_seconds"]
        for label, sec in p["parts"]:
            share = f"{sec / wall * 100:.0f}%" if sec == sec and wall else "-"
            lines.append(f"| {label} | {sec:.3f} | {share} |")
    return "\n".join(lines)


# --- main ----------------------------------------------------------------------------------------


def main(argv=None) -> int:
    args = parse_args(argv)
    machine = machine_info()
    data_dir = Path(args.data_dir).expanduser().resolve() if args.data_dir else (REPO / ".." / "shared" / "data").resolve()
    images = read_idx(find_mnist(data_dir, "t10k-images-idx3-ubyte"))[: args.n]
    labels = read_idx(find_mnist(data_dir, "t10k-labels-idx1-ubyte"))[: args.n]

    scratch = Path(tempfile.mkdtemp(prefix="digitq-bench-"))
    home = Path(args.home).expanduser().resolve() if args.home else scratch / "home"
    home.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k not in ("DIGITQ_BROKER_URL", "DIGITQ_RESULT_BACKEND")}
    env.update(DIGITQ_HOME=str(home), DIGITQ_DATA_DIR=str(data_dir))
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    log = lambda msg: print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)  # noqa: E731
    log(f"scratch {scratch}, DIGITQ_HOME {home}, DIGITQ_DATA_DIR {data_dir}")

    stack_started = False
    try:
        t = time.perf_counter()
        files = write_pngs(images, scratch / "images", args.png_size)
        warm_dir = scratch / "warm"
        warm_dir.mkdir()
        for p in files[: args.warm_files]:
            shutil.copy(p, warm_dir / p.name)
        log(f"wrote {len(files)} PNGs in {time.perf_counter() - t:.1f} s")

        t = time.perf_counter()
        stack_started = True  # even a half-started stack is stopped at the end
        cli(["local", "up", "--json"], env, args.timeout)
        log(f"embedded stack up in {time.perf_counter() - t:.1f} s")
        if args.model_ref:
            model = registered_model(env, args.model_ref, args.timeout)
        else:
            log(f"training: digitq submit-train --json {args.train_args}")
            model = train_model(env, args)
            log(f"trained {model['model']} in {model['train_wall_seconds']} s (test accuracy {model['test_accuracy']})")

        # (c) first, before this process imports TensorFlow.
        out_csv = scratch / "out.csv"
        warm = run_predict(warm_dir, model["model"], scratch / "warm.csv", env, args, home)
        log(f"(c) warm-up on {args.warm_files} files: {warm['wall_seconds']:.2f} s")
        c_runs = []
        for i in range(args.repeats):
            run = run_predict(scratch / "images", model["model"], out_csv, env, args, home)
            run.update(csv_accuracy(out_csv, labels))
            c_runs.append(run)
            log(f"(c) run {i + 1}/{args.repeats}: {run['wall_seconds']:.2f} s wall, "
                f"{len(files) / run['wall_seconds']:,.0f} images/s, accuracy {run['accuracy']:.4f}")
        c_median = statistics.median(r["wall_seconds"] for r in c_runs)
        c_mid = min(c_runs, key=lambda r: abs(r["wall_seconds"] - c_median))

        load_image_seconds = float("nan")
        if not args.no_profile:
            load_image_seconds = profile_load_image(files, args.chunk_size or DEFAULT_CHUNK)
            log(f"client load_images alone over {len(files)} files: {load_image_seconds:.2f} s")

        e = bench_bare_script(model["path"], scratch / "images", scratch / "bare.csv", labels, args.keras_batch_size,
                              args.repeats) if args.png_size == 28 else None
        if e:
            log(f"(e) runs: {', '.join(f'{s:.2f}' for s in e['times'])} s")
        kmodel, tf_version, keras_version = load_keras_model(model["path"])
        machine.update(tensorflow=tf_version, keras=keras_version)
        a = bench_keras(kmodel, images, labels, args.keras_batch_size, args.repeats)
        log(f"(a) runs: {', '.join(f'{s:.3f}' for s in a['times'])} s")
        d = bench_keras_files(kmodel, files, labels, args.keras_batch_size, args.repeats) if args.png_size == 28 else None
        if d:
            log(f"(d) runs: {', '.join(f'{s:.3f}' for s in d['times'])} s")
        sample = files[: args.loop_sample]
        b = bench_loop(kmodel, sample, labels, args.loop_repeats, args.loop_call)
        log(f"(b) runs on {len(sample)} files: {', '.join(f'{s:.2f}' for s in b['times'])} s")
    finally:
        if stack_started and not args.keep:
            down = cli(["local", "down", "--json"], env, 120, check=False)
            log("embedded stack stopped" if down.returncode == 0 else f"local down failed: {down.stderr[-500:]}")
        if not args.keep:
            shutil.rmtree(scratch, ignore_errors=True)
        else:
            log(f"kept {scratch} (stack still running; stop it with DIGITQ_HOME={home} digitq local down)")

    machine["load_average_end"] = list(os.getloadavg())
    a_sec = statistics.median(a["times"])
    b_sec = statistics.median(b["times"])
    rates = {"a": len(images) / a_sec, "b": len(sample) / b_sec, "c": len(files) / c_median}
    if d:
        d_sec = statistics.median(d["times"])
        rates["d"] = len(files) / d_sec
    if e:
        e_sec = statistics.median(e["times"])
        rates["e"] = len(files) / e_sec
    results = {
        "a": {"images": len(images), "median_seconds": a_sec, "runs_seconds": a["times"], "images_per_second": rates["a"],
              "accuracy": a["accuracy"], "batch_size": args.keras_batch_size,
              "note": f"decoded IDX arrays, one call, batch {args.keras_batch_size}, model load and tracing excluded"},
        "b": {"images": len(sample), "median_seconds": b_sec, "runs_seconds": b["times"], "images_per_second": rates["b"],
              "accuracy": b["accuracy"], "call": args.loop_call,
              "note": f"rate measured on the first {len(sample):,} of {len(files):,} files (model.{args.loop_call} per image)"
              if args.loop_call == "predict" else
              f"rate measured on the first {len(sample):,} of {len(files):,} files (model(x) per image)"},
        "c": {"images": len(files), "median_seconds": c_median, "runs_seconds": [r["wall_seconds"] for r in c_runs],
              "images_per_second": rates["c"], "accuracy": c_mid["accuracy"], "runs": c_runs,
              "warmup": warm, "note": "subprocess wall clock, warm worker, embedded stack"},
    }
    if d:
        results["d"] = {"images": len(files), "median_seconds": d_sec, "runs_seconds": d["times"],
                        "images_per_second": rates["d"], "accuracy": d["accuracy"], "batch_size": args.keras_batch_size,
                        "note": f"PIL decode of every file, then one call, batch {args.keras_batch_size}; "
                                "model load and tracing excluded"}
    if e:
        results["e"] = {"images": len(files), "median_seconds": e_sec, "runs_seconds": e["times"],
                        "images_per_second": rates["e"], "accuracy": e["accuracy"],
                        "note": "a fresh Python process: import Keras, load the model, decode, predict, write a CSV"}
    goals = {
        "c_over_a": {"value": rates["c"] / rates["a"], "goal": GOAL_VS_KERAS},
        "c_over_b": {"value": rates["c"] / rates["b"], "goal": GOAL_VS_LOOP},
    }
    if d:
        goals["c_over_d"] = {"value": rates["c"] / rates["d"], "goal": GOAL_VS_KERAS_FILES}
    if e:
        goals["c_over_e"] = {"value": rates["c"] / rates["e"], "goal": GOAL_VS_KERAS_FILES}
    for g in goals.values():
        g["met"] = g["value"] >= g["goal"]
    profile = None
    if c_mid.get("cli_reported_seconds") is not None:
        startup = c_mid["wall_seconds"] - c_mid["cli_reported_seconds"]
        profile = {"load_image_seconds": load_image_seconds,
                   "load_image_us_per_image": load_image_seconds / len(files) * 1e6,
                   "client_startup_seconds": startup,
                   "worker_busy_seconds": c_mid["worker_busy_seconds"], "worker_tasks": c_mid["worker_tasks"],
                   "parts": [
                       ("client start-up and exit (wall minus the CLI's own timer)", startup),
                       (f"client load_images alone, 1 process, measured separately "
                        f"({load_image_seconds / len(files) * 1e6:,.0f} us/image)", load_image_seconds),
                       (f"worker busy in {c_mid['worker_tasks']} predict tasks (from worker.log)", c_mid["worker_busy_seconds"]),
                       ("bare Keras (a) on the same images, for scale", a_sec),
                   ]}
    res = {"n": len(files), "png_size": args.png_size, "machine": machine, "model": model, "results": results,
           "goals": goals, "profile": profile, "args": vars(args),
           "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    print(render(res))
    out = Path(args.out)
    out = out if out.is_absolute() else REPO / out
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2, default=str) + "\n")
    print(f"\nresults written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
