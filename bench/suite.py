#!/usr/bin/env python3
"""digitq's benchmark suite: every benchmark next to its competitor, in one run, on one machine.

    .venv/bin/python bench/suite.py                      # full run (hours on 2 cores)
    .venv/bin/python bench/suite.py --quick              # smoke run (minutes): small data, few repeats
    .venv/bin/python bench/suite.py --only ceiling       # rerun one benchmark, keep the others' results
    .venv/bin/python bench/suite.py --render-only        # redraw plots and report from <out>/suite.json

Benchmarks (names for --only), in the order they run; how long each takes on 2 cores is in
BENCHMARKS.md ("How to rerun"), and each one's module in bench/benchkit/sections/ says what it does:

  overhead  `digitq submit-train --wait --json --epochs 2` on a warm embedded stack vs
            bench/bare_keras.py (same model, recipe, split, batch, epochs) in a fresh process,
            --overhead-repeats pairs (alternating which side goes first); the headline is the median
            of the per-pair ratios; where the difference goes; cold start (`local down`, `local up` +
            first tiny job)
  tta       time to each of config.THRESHOLDS of test accuracy, --track-test: the default cnn
            (--cnn-epochs, run to the end) vs the tutorials' seed-cnn with their epochs
            (--seed-epochs), stopped with `digitq cancel` as soon as its tracked test accuracy first
            reaches --seed-target; goal: config.TTA_GOAL_RATIO at the target
  ceiling   one job `--augment [--elastic] --ensemble K --epochs E --track-test` per --ceiling-augment
            entry (or the finished --ceiling-job ones), combined when several: each member's and the
            ensemble's test accuracy vs config.SINGLE_GOAL and config.ENSEMBLE_GOAL, then
            `digitq evaluate` on the registered model
  queue     submit-to-result latency (p50/p99) of tiny predict tasks on the warm worker, and the
            throughput of N tasks sent at once, vs the worker's own time per task
  predict   bench/predict_throughput.py: `digitq predict` vs bare Keras vs a per-image loop
  scaling   training images/s with DIGITQ_CPU_REPLICAS=1 vs 2 (bare helper), and 1 vs 2 worker
            processes on two concurrent jobs (a second worker started against the embedded broker)
  onednn    the bare helper with TensorFlow's oneDNN kernels off and on (the worker's default) vs
            TensorFlow's own choice on this CPU

Writes <out>/suite.json (default bench/results/suite.json, committed; predict.json and the logs
there are not), the plots to bench/plots/*.png (committed; copies in <out>), and the report
BENCHMARKS.md at the repository root. Each benchmark's result carries a stamp: when it ran (UTC),
the git commit ("+changes" if the tree was dirty), whether it was a --quick run. With --only, the
other benchmarks' results and timings are kept from the existing <out>/suite.json, so the report
always has every section. A --quick run is marked as a smoke run in the report and the plots.

Everything that measures the service goes through subprocess calls of the real CLI (the queue
benchmark uses the Python client API, as digitq's own `predict` does; tta polls the job's
history.json on the shared volume). A fresh DIGITQ_HOME (temp dir, or --home) holds the embedded
stack, which is stopped at the end.

The parts live in bench/benchkit/ (see its __init__.py); this file is the entry point.
"""

from __future__ import annotations

import sys
from pathlib import Path

BENCH = str(Path(__file__).resolve().parent)
if BENCH not in sys.path:  # `python bench/suite.py` puts it there; an import by path does not
    sys.path.insert(0, BENCH)

from benchkit.cli import main, parse_args  # noqa: E402

__all__ = ["main", "parse_args"]

if __name__ == "__main__":
    sys.exit(main())
