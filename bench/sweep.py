"""Benchmark: what pruning saves in a sweep, and how its best trial compares with the default recipe.

    python bench/sweep.py                       # 12 trials, 2 at once on 2 workers, 4 epochs, 5,000 images
    python bench/sweep.py --trials 20 --epochs 6 --train-size 10000

In one run, on its own redis-server and W real workers:
1. a sweep (ASHA, the default pruner; TPE) of N trials of the default cnn over learning rate, batch
   size, dropout and label smoothing;
2. every trial the sweep pruned, run again to the end as a normal job with the same options, so
   that "every trial to the end" is measured, not extrapolated: its training seconds are those of
   the sweep's complete trials plus these reruns;
3. today's default recipe (`digitq submit-train` with the same epochs and data), beside the reruns.

Reports (stdout and --out JSON): the sweep's training seconds / every trial to the end (ratio), the
sweep's wall time, whether pruning dropped a trial that would have ended best, and the best trial's
test accuracy against the default recipe's.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.processes import RedisServer, WorkerProcess  # noqa: E402  (real processes, as the tests use)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=12)
    ap.add_argument("--parallel", type=int, default=2)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--train-size", type=int, default=5000)
    ap.add_argument("--validation-size", type=int, default=2000)
    ap.add_argument("--test-size", type=int, default=10000)
    ap.add_argument("--pruner", default="asha")
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "sweep.json"))
    args = ap.parse_args()
    data_dir = Path(os.environ.get("DIGITQ_DATA_DIR") or REPO.parent / "shared" / "data").resolve()

    from digitq.client.api import Client
    from digitq.common.schemas import TrainRequest
    from digitq.common.sweep import make_sweep_request

    base = tempfile.mkdtemp(prefix="digitq-bench-sweep-")
    server = RedisServer(Path(base) / "redis")
    server.start()
    home = Path(base) / "home"
    workers = [WorkerProcess(server.url, home, data_dir, name=f"w{i + 1}", cpu_replicas=1)
               for i in range(args.workers)]
    try:
        for w in workers:
            w.start()
        for w in workers:
            w.wait_ready()
        client = Client(server.url)
        data = dict(epochs=args.epochs, train_size=args.train_size, validation_size=args.validation_size,
                    test_size=args.test_size)
        req = make_sweep_request(["lr=loguniform:1e-3:1e-2", "bs=choice:64,128,256", "dropout=uniform:0:0.3",
                                  "label_smoothing=uniform:0:0.15"], trials=args.trials, parallel=args.parallel,
                                 pruner=args.pruner, name="bench-sweep", **data)
        t0 = time.monotonic()
        sweep_id = client.sweep_submit(req)
        st = client.sweep_wait(sweep_id, timeout=6 * 3600)
        sweep_wall = time.monotonic() - t0
        trials = st.trials
        pruned = [t for t in trials if t["state"] == "pruned"]
        print(f"sweep {sweep_id}: {st.state} in {sweep_wall:.0f} s; {len(pruned)} of {len(trials)} pruned", flush=True)

        # every pruned trial to the end, and the default recipe, side by side on the same workers
        t1 = time.monotonic()
        reruns = {t["slot"]: client.submit_train(TrainRequest.from_dict({**req.base, **t["params"],
                                                                          "name": "bench-full"}))
                  for t in pruned}
        default_job = client.submit_train(TrainRequest(name="bench-default", **data))
        rerun_results = {slot: client.wait(job, timeout=6 * 3600) for slot, job in reruns.items()}
        default = client.wait(default_job, timeout=6 * 3600)
        rerun_wall = time.monotonic() - t1

        sweep_seconds = sum(t.get("seconds") or 0 for t in trials)
        full = {t["slot"]: {"seconds": t.get("seconds") or 0, "val_accuracy": t.get("value")}
                for t in trials if t["state"] == "complete"}
        for slot, res in rerun_results.items():
            full[slot] = {"seconds": res["train_seconds"], "val_accuracy": res["history"][-1]["val_accuracy"]}
        full_seconds = sum(v["seconds"] for v in full.values())
        would_be_best = max(full, key=lambda s: (full[s]["val_accuracy"], -s))
        best = st.best or {}
        out = {
            "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "config": vars(args),
            "sweep_id": sweep_id,
            "sweep_state": st.state,
            "sweep_wall_seconds": round(sweep_wall, 1),
            "trials": len(trials),
            "pruned": len(pruned),
            "pruned_at": sorted(t.get("pruned_at") for t in pruned),
            "sweep_train_seconds": round(sweep_seconds, 1),
            "all_to_the_end_train_seconds": round(full_seconds, 1),
            "ratio": round(sweep_seconds / full_seconds, 3) if full_seconds else None,
            "best_slot": best.get("slot"),
            "best_params": best.get("params"),
            "best_val_accuracy": best.get("value"),
            "best_test_accuracy": best.get("test_accuracy"),
            "would_be_best_slot_without_pruning": would_be_best,
            "would_be_best_val_accuracy": full[would_be_best]["val_accuracy"],
            "default_test_accuracy": default["test_accuracy"],
            "default_train_seconds": default["train_seconds"],
            "rerun_wall_seconds": round(rerun_wall, 1),
            "model": st.model,
            "load_average": os.getloadavg(),
        }
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
        print(json.dumps(out, indent=2))
        print(f"\nsweep training {sweep_seconds:.0f} s vs every trial to the end {full_seconds:.0f} s: "
              f"ratio {out['ratio']}; best trial test accuracy {best.get('test_accuracy', float('nan')) * 100:.2f}% "
              f"vs default recipe {default['test_accuracy'] * 100:.2f}% ({args.epochs} epochs, "
              f"{args.train_size} images)")
    finally:
        for w in workers:
            w.kill()
        server.stop()


if __name__ == "__main__":
    main()
