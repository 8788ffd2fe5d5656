#!/usr/bin/env python3
"""digitq's benchmark suite: every benchmark next to its competitor, in one run, on one machine.

    .venv/bin/python bench/suite.py                      # full run (~1.5-2 h on 2 cores)
    .venv/bin/python bench/suite.py --quick              # smoke run (~4 min): small data, few repeats
    .venv/bin/python bench/suite.py --only ceiling       # rerun one benchmark, keep the others' results
    .venv/bin/python bench/suite.py --render-only        # redraw plots and report from <out>/suite.json

Benchmarks (names for --only), in the order they run, with their length on 2 cores (a cnn epoch
takes ~21-40 s here, a seed-cnn epoch ~42-80 s):

  overhead  `digitq submit-train --wait --json --epochs 2` on a warm embedded stack vs
            bench/bare_keras.py (same model, recipe, split, batch, epochs) in a fresh process,
            --overhead-repeats pairs (default 5, alternating which side goes first); the headline is
            the median of the per-pair ratios; where the difference goes; cold start (`local down`,
            `local up` + first tiny job). ~12 min
  tta       time to 98.5/99.0/99.3/99.4/99.5% test accuracy, --track-test: the default cnn
            (--epochs 5, run to the end) vs the tutorials' seed-cnn with their 30 epochs
            (--seed-epochs), stopped with `digitq cancel` as soon as its tracked test accuracy first
            reaches --seed-target (default 99.4%); goal: seed-cnn/cnn >= 10 at 99.4%. ~10-40 min
  ceiling   one job `--augment [--elastic] --ensemble K --epochs E --track-test` (--ceiling-k 5,
            --ceiling-epochs 20, --ceiling-augment elastic): each member's and the ensemble's test
            accuracy vs the goals
            >= 99.65% single and >= 99.75% ensemble, then `digitq evaluate` on the registered
            ensemble. ~1 h
  queue     submit-to-result latency (p50/p99) of tiny predict tasks on the warm worker, and the
            throughput of N tasks sent at once, vs the worker's own time per task. <1 min
  predict   bench/predict_throughput.py: `digitq predict` vs bare Keras vs a per-image loop. ~3 min
  scaling   training images/s with DIGITQ_CPU_REPLICAS=1 vs 2 (bare helper), and 1 vs 2 worker
            processes on two concurrent jobs (a second worker started against the embedded broker). ~3 min

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
