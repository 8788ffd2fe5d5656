"""Wall time of one `--ensemble K` job on 2 workers against 1 worker, in the same run.

    .venv/bin/python bench/ensemble_scaling.py                  # K=2, 1 epoch on 10,000 images
    .venv/bin/python bench/ensemble_scaling.py --epochs 2 --repeats 2

Starts a redis-server of its own and two workers (`python -m digitq.worker --queues train`), each
pinned to its own CPU core with `taskset` in BOTH configurations: one worker per machine, as when
users add GPU machines (on a 2-core machine, an unpinned worker would use both cores and the
comparison would measure core sharing instead). Each worker first runs a tiny warm-up job, so
neither configuration pays TensorFlow's first-job costs. Then, per repeat, in alternating order: the
ensemble on both workers (its members run side by side), and the same ensemble with the second worker
stopped (its members one after the other), each timed from submit to the registered model (`Client.wait`). Reports
the ratio 2 workers / 1 worker (ideal: ceil(K/2)/K, 0.5 for K=2) and the machine's load average, since
other processes on a shared machine slow both alike only when they are steady.

Writes bench/results/ensemble_scaling.json and bench/ensemble_scaling.md (the section BENCHMARKS.md
appends; bench/benchkit/report.py). Not a test: a measurement.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results" / "ensemble_scaling.json"
NOTES = REPO / "bench" / "ensemble_scaling.md"


def log(msg: str) -> None:
    print(f"[ensemble_scaling {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Stack:
    """A redis-server and pinned workers in a scratch DIGITQ_HOME."""

    def __init__(self, scratch: Path, data_dir: Path):
        self.scratch, self.data_dir = scratch, data_dir
        self.port = free_port()
        self.url = f"redis://:bench@127.0.0.1:{self.port}/0"
        self.home = scratch / "home"
        self.home.mkdir(parents=True)
        self.redis = subprocess.Popen(["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                                       "--requirepass", "bench", "--save", "", "--dir", str(scratch)],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        self.workers: dict[int, subprocess.Popen] = {}

    def env(self) -> dict:
        return dict(os.environ, DIGITQ_BROKER_URL=self.url, DIGITQ_HOME=str(self.home),
                    DIGITQ_DATA_DIR=str(self.data_dir), DIGITQ_CPU_REPLICAS="1", TF_CPP_MIN_LOG_LEVEL="2")

    def start_worker(self, core: int | None) -> None:
        """A worker pinned to `core`, or (None) on every core."""
        logf = open(self.scratch / f"worker-{core}.log", "ab")
        pin = ["taskset", "-c", str(core)] if core is not None else []
        self.workers[core] = subprocess.Popen(
            [*pin, sys.executable, "-m", "digitq.worker", "--queues", "train",
             "--hostname", f"core{core}@bench", "--loglevel", "INFO"],
            stdout=logf, stderr=subprocess.STDOUT, env=self.env(), start_new_session=True)

    def stop_worker(self, core: int) -> None:
        proc = self.workers.pop(core)
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def close(self) -> None:
        for core in list(self.workers):
            self.stop_worker(core)
        self.redis.terminate()
        self.redis.wait(10)


def wait_workers(client, n: int, timeout: float = 180) -> None:
    from digitq.common.ensemble import live_train_workers

    deadline = time.monotonic() + timeout
    while live_train_workers(client.redis) != n:
        if time.monotonic() > deadline:
            raise SystemExit(f"expected {n} live worker(s), see the worker logs")
        time.sleep(0.5)


def warm_up(client, n: int) -> None:
    """One tiny job per worker, submitted together so each worker takes one."""
    from digitq.common.schemas import TrainRequest

    tiny = TrainRequest(name="warm-up", epochs=1, train_size=500, validation_size=100, test_size=500)
    jobs = [client.submit_train(tiny) for _ in range(n)]
    workers = {client.wait(j, timeout=600)["worker"] for j in jobs}
    if len(workers) != n:
        log(f"warning: the warm-up jobs ran on {len(workers)} worker(s), not {n}")


def time_ensemble(client, args, label: str) -> dict:
    from digitq.common.schemas import TrainRequest

    req = TrainRequest(name=f"bench-{label}", ensemble=args.k, epochs=args.epochs, train_size=args.train_size,
                       validation_size=args.validation_size)
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    job = client.submit_train(req)
    res = client.wait(job, timeout=3600)
    wall = time.perf_counter() - t0
    log(f"{label}: {wall:.1f} s, test accuracy {res['test_accuracy']:.4f}, members on {sorted(set(res['member_workers']))}")
    rates = [round(e["images_per_second"], 1) for e in res["history"] if e.get("images_per_second")]
    return {"label": label, "wall_seconds": round(wall, 2), "train_seconds": res["train_seconds"],
            "member_images_per_second": rates,
            "test_accuracy": res["test_accuracy"], "member_accuracies": res["member_accuracies"],
            "member_workers": res["member_workers"], "load_before": round(load, 2),
            "load_after": round(os.getloadavg()[0], 2)}


def _mean_rate(run: dict) -> float:
    rates = run.get("member_images_per_second") or [0.0]
    return sum(rates) / len(rates)


def speed_note(pairs: list) -> str:
    """Which pair compares like with like: the one whose members trained at the most similar speed
    (images/s) in both configurations; on a shared machine the others' work moves that speed."""
    if not all(p["one"].get("member_images_per_second") for p in pairs):
        return ""
    best = min(pairs, key=lambda p: abs(_mean_rate(p["one"]) / max(_mean_rate(p["two"]), 1e-9) - 1))
    spread = [_mean_rate(p["one"]) / max(_mean_rate(p["two"]), 1e-9) for p in pairs]
    if max(abs(x - 1) for x in spread) <= 0.1:  # like with like in every pair: nothing to explain
        return (f"The members trained at the same speed in both configurations (a lone worker's members at "
                f"{min(spread):.2f}-{max(spread):.2f}x the images/s of the pair's), so the ratio is the fan-out's own.")
    return (f"The machine's other work moved the members' own speed between runs: a lone worker's members trained "
            f"{min(spread):.2f}-{max(spread):.2f}x as fast as those of the pair (images/s column), which inflates the "
            f"ratio when the lone worker got more of the machine. In pair {pairs.index(best) + 1}, where the members "
            f"trained at about the same speed in both configurations, the ratio was **{best['ratio']:.2f}**.")


def render(out: dict) -> str:
    """bench/ensemble_scaling.md: the section BENCHMARKS.md appends."""
    a = out["args"]
    ratios = [p["ratio"] for p in out["pairs"]]
    def rates(run: dict) -> str:
        return ", ".join(f"{r:.0f}" for r in run.get("member_images_per_second") or []) or "-"

    rows = [f"| {i + 1} | {p['two']['wall_seconds']:.1f} s | {p['one']['wall_seconds']:.1f} s | **{p['ratio']:.2f}** | "
            f"{rates(p['two'])} / {rates(p['one'])} | {p['two']['load_before']:.1f} / {p['one']['load_before']:.1f} |"
            for i, p in enumerate(out["pairs"])]
    return "\n".join([
        "## Ensembles over the workers",
        "",
        "_Written by `bench/ensemble_scaling.py` (appended by the renderer; rerun it to refresh)._",
        "",
        f"One `--ensemble {a['k']}` job ({a['epochs']} epoch(s) on {a['train_size']:,} MNIST images, "
        f"{a['validation_size']:,} for validation, all 10,000 test images), its wall time from submit to the "
        "registered model on 2 workers against 1, in the same run (pairs alternate which configuration goes first). Each worker "
        "is pinned to its own core with `taskset` in both configurations: one worker per machine, as when users add "
        "machines. Measured on " + out["date"] + f", {out['cpus']} cores (the load average before each run is in the "
        "last column; other work on the machine moves the members' speed).",
        "",
        "| pair | 2 workers | 1 worker | ratio (ideal 0.5) | members' training images/s, 2w / 1w | load 2w / 1w |",
        "| --- | --- | --- | --- | --- | --- |",
        *rows,
        "",
        f"Median ratio **{out['median_ratio']:.2f}** (range {min(ratios):.2f}-{max(ratios):.2f}). "
        + speed_note(out["pairs"])
        + " Beyond noise, what keeps a ratio above 0.5: the ensemble's registration (loading the test labels, "
        "averaging the members' saved probabilities) and the queue hops between members, a second or two each.",
        "",
        "```bash",
        out["command"],
        "```",
        "",
    ])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--k", type=int, default=2, help="ensemble members")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--train-size", type=int, default=10000)
    ap.add_argument("--validation-size", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=1, help="pairs of (2 workers, 1 worker) runs")
    ap.add_argument("--data-dir", default=os.environ.get("DIGITQ_DATA_DIR") or str(REPO.parent / "shared" / "data"))
    ap.add_argument("--no-write", action="store_true", help="print only; leave the results files alone")
    ap.add_argument("--render-only", action="store_true", help="rewrite bench/ensemble_scaling.md from the JSON")
    args = ap.parse_args()
    if args.render_only:
        NOTES.write_text(render(json.loads(RESULTS.read_text())))
        return 0
    if (os.cpu_count() or 1) < 2 or not shutil.which("taskset") or not shutil.which("redis-server"):
        raise SystemExit("needs 2 cores, taskset and redis-server")
    data_dir = Path(args.data_dir).expanduser().resolve()
    if not (data_dir / "mnist").is_dir():
        raise SystemExit(f"no MNIST in {data_dir / 'mnist'}: pass --data-dir")

    from digitq.client.api import Client

    scratch = Path(tempfile.mkdtemp(prefix="digitq-ensemble-bench-"))
    stack = Stack(scratch, data_dir)
    pairs = []
    try:
        time.sleep(0.5)
        client = Client(stack.url)
        for i in range(args.repeats):
            runs = {}
            for config in ("two", "one") if i % 2 == 0 else ("one", "two"):  # alternate which goes first
                if config == "two":
                    for core in (0, 1):
                        if core not in stack.workers:
                            stack.start_worker(core)
                    wait_workers(client, 2)
                    warm_up(client, 2)
                else:
                    if 0 not in stack.workers:
                        stack.start_worker(0)
                    if 1 in stack.workers:
                        stack.stop_worker(1)
                    wait_workers(client, 1)
                    if i == 0:
                        warm_up(client, 1)
                runs[config] = time_ensemble(client, args, f"{config}-{i}")
            two, one = runs["two"], runs["one"]
            pairs.append({"two": two, "one": one, "first": "two" if i % 2 == 0 else "one",
                          "ratio": round(two["wall_seconds"] / one["wall_seconds"], 3)})
            log(f"pair {i + 1}: ratio {pairs[-1]['ratio']:.3f}")
    finally:
        stack.close()
        shutil.rmtree(scratch, ignore_errors=True)
    ratios = sorted(p["ratio"] for p in pairs)
    out = {"args": vars(args), "date": time.strftime("%Y-%m-%d"), "cpus": os.cpu_count(), "pairs": pairs,
           "median_ratio": ratios[len(ratios) // 2] if len(ratios) % 2 else sum(ratios[len(ratios) // 2 - 1:][:2]) / 2,
           "command": "python bench/ensemble_scaling.py " + " ".join(sys.argv[1:])}
    out["args"].pop("data_dir")
    print(json.dumps(out, indent=1))
    if not args.no_write:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(out, indent=1) + "\n")
        NOTES.write_text(render(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
