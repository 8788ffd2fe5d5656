"""Time to accuracy of the default training job against the previous default, in the same run.

    .venv/bin/python bench/time_to_accuracy.py                 # 1 pair: `--arch cnn` (the default until
                                                               # 2026-12) vs today's default
    .venv/bin/python bench/time_to_accuracy.py --repeats 2     # 2 pairs, alternating which goes first

Both sides are `digitq submit-train --track-test` jobs with nothing else set but the architecture,
on one worker (a redis-server of its own and `python -m digitq.worker --queues train`, both cores,
warmed up by a tiny job first). From each job's history (`train_elapsed`: training seconds so far,
the per-epoch test pass not counted; `test_accuracy` after each epoch) it reports the training
seconds to 99.0% and to 99.5% MNIST test accuracy, the final accuracy, the mean epoch and the whole
job, and the ratios previous / default. The goals (issue 18): 99.0% within 15 s, 99.5% within 50 s,
final >= 99.5%.

Writes bench/results/time_to_accuracy.json and bench/time_to_accuracy.md (the section BENCHMARKS.md
appends; bench/benchkit/report.py). Not a test: a measurement; the machine's load average is
recorded before each job, since other work on a 2-core machine slows a job as much as anything here.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ensemble_scaling import Stack, wait_workers, warm_up  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results" / "time_to_accuracy.json"
NOTES = REPO / "bench" / "time_to_accuracy.md"
THRESHOLDS = (0.99, 0.995)
GOALS = {0.99: 15.0, 0.995: 50.0}


def log(msg: str) -> None:
    print(f"[time_to_accuracy {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def time_to(history: list, threshold: float) -> float | None:
    """Training seconds (`train_elapsed`) at the first epoch whose test accuracy reached `threshold`."""
    for entry in history:
        if entry.get("test_accuracy") is not None and entry["test_accuracy"] >= threshold:
            return entry["train_elapsed"]
    return None


def run_job(client, label: str, arch: str | None, epochs: int | None) -> dict:
    from digitq.common.schemas import TrainRequest

    fields = {"name": f"bench-tta-{label}", "track_test": True}
    if arch:
        fields["arch"] = arch
    if epochs:
        fields["epochs"] = epochs
    req = TrainRequest(**fields)
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    res = client.wait(client.submit_train(req), timeout=3600)
    wall = time.perf_counter() - t0
    hist = res["history"]
    out = {"label": label, "arch": res["arch"], "epochs": len(hist), "wall_seconds": round(wall, 2),
           "train_seconds": res["train_seconds"], "test_accuracy": res["test_accuracy"],
           "epoch_seconds": round(sum(e["seconds"] for e in hist) / len(hist), 2),
           "curve": [(e["train_elapsed"], e["test_accuracy"]) for e in hist],
           "load_before": round(load, 2), "load_after": round(os.getloadavg()[0], 2)}
    for t in THRESHOLDS:
        out[f"to_{t}"] = time_to(hist, t)
    log(f"{label} ({res['arch']}): {out['test_accuracy']:.4f} after {len(hist)} epochs, "
        + ", ".join(f"{t:.1%} at {out[f'to_{t}']} s" for t in THRESHOLDS))
    return out


def _ratio(a, b):
    return round(a / b, 2) if a is not None and b else None


def _secs(x) -> str:
    return "not reached" if x is None else f"{x:.1f} s"


def render(out: dict) -> str:
    """bench/time_to_accuracy.md: the section BENCHMARKS.md appends."""
    rows = []
    for i, p in enumerate(out["pairs"]):
        for side in ("previous", "default"):
            r = p[side]
            rows.append(f"| {i + 1} | {side} (`{r['arch']}`) | {_secs(r['to_0.99'])} | {_secs(r['to_0.995'])} | "
                        f"{r['test_accuracy'] * 100:.2f}% | {r['epochs']} | {r['epoch_seconds']:.1f} s | "
                        f"{r['train_seconds']:.1f} s | {r['wall_seconds']:.1f} s | {r['load_before']:.1f} |")
    best = {t: [p["default"][f"to_{t}"] for p in out["pairs"]] for t in THRESHOLDS}
    ratios = {t: [_ratio(p["previous"][f"to_{t}"], p["default"][f"to_{t}"]) for p in out["pairs"]] for t in THRESHOLDS}

    def goal(t) -> str:
        times = [x for x in best[t] if x is not None]
        met = times and max(times) <= GOALS[t]
        return (f"{t:.1%} within {GOALS[t]:.0f} s: **{'met' if met else 'not met'}** "
                f"({', '.join(_secs(x) for x in best[t])}; previous / default {', '.join(map(str, ratios[t]))}x)")

    return "\n".join([
        "## Time to accuracy: the default job against the previous default",
        "",
        "_Written by `bench/time_to_accuracy.py` (appended by the renderer; rerun it to refresh)._",
        "",
        "`digitq submit-train --track-test` with nothing else set, on one worker using both cores, against the same "
        "job with `--arch cnn` (the default before 2026-12), in the same run (pairs alternate which goes first). "
        "Times are training seconds (`train_elapsed` in the job's history: the per-epoch test pass not counted) at the "
        f"first epoch whose MNIST test accuracy reached the threshold. Measured on {out['date']}, {out['cpu']}, "
        f"{out['cpus']} cores; the load average before each job is in the last column.",
        "",
        "| pair | job | to 99.0% | to 99.5% | final | epochs | epoch | training | job (submit to result) | load |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        *rows,
        "",
        "Goals: " + "; ".join(goal(t) for t in THRESHOLDS) + ".",
        "",
        "```bash",
        out["command"],
        "```",
        "",
    ])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=1, help="pairs of (previous, default) jobs")
    ap.add_argument("--previous-arch", default="cnn", help="the architecture the default is compared with")
    ap.add_argument("--epochs", type=int, default=None, help="both jobs (default: the request's default)")
    ap.add_argument("--data-dir", default=os.environ.get("DIGITQ_DATA_DIR") or str(REPO.parent / "shared" / "data"))
    ap.add_argument("--no-write", action="store_true", help="print only; leave the results files alone")
    ap.add_argument("--render-only", action="store_true", help="rewrite bench/time_to_accuracy.md from the JSON")
    args = ap.parse_args()
    if args.render_only:
        NOTES.write_text(render(json.loads(RESULTS.read_text())))
        return 0
    if not shutil.which("redis-server"):
        raise SystemExit("needs redis-server on PATH")
    data_dir = Path(args.data_dir).expanduser().resolve()
    if not (data_dir / "mnist").is_dir():
        raise SystemExit(f"no MNIST in {data_dir / 'mnist'}: pass --data-dir")

    from benchkit.stamps import cpu_model
    from digitq.client.api import Client

    scratch = Path(tempfile.mkdtemp(prefix="digitq-tta-bench-"))
    stack = Stack(scratch, data_dir)
    pairs = []
    try:
        time.sleep(0.5)
        client = Client(stack.url)
        stack.start_worker(None)
        wait_workers(client, 1)
        warm_up(client, 1)
        for i in range(args.repeats):
            sides = {}
            for side in ("previous", "default") if i % 2 == 0 else ("default", "previous"):
                arch = args.previous_arch if side == "previous" else None
                sides[side] = run_job(client, f"{side}-{i}", arch, args.epochs)
            pairs.append({**sides, "first": "previous" if i % 2 == 0 else "default"})
    finally:
        stack.close()
        shutil.rmtree(scratch, ignore_errors=True)
    out = {"args": {k: v for k, v in vars(args).items() if k != "data_dir"}, "date": time.strftime("%Y-%m-%d"),
           "cpu": cpu_model(), "cpus": os.cpu_count(), "pairs": pairs,
           "command": "python bench/time_to_accuracy.py " + " ".join(sys.argv[1:])}
    print(json.dumps(out, indent=1))
    if not args.no_write:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(out, indent=1) + "\n")
        NOTES.write_text(render(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
