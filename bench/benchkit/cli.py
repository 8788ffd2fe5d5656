"""The command line of bench/suite.py: its options, their defaults, and main()."""

from __future__ import annotations

import argparse

from benchkit.config import PLOTS, QUICK_DATA, REPORT, SEED_TARGET, TUTORIAL_SEED_EPOCHS
from benchkit.runner import render_only, run_suite
from benchkit.sections import BENCHMARKS

DESCRIPTION = "digitq's benchmark suite: every benchmark next to its competitor, in one run, on one machine."


def parse_args(argv=None) -> argparse.Namespace:
    """The suite's options, their --quick and full defaults filled in, checked; --only as `selected`, in run order."""
    p = argparse.ArgumentParser(description=DESCRIPTION,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 5,000 training images, 1 repeat (2 overhead pairs), 2 epochs for time-to-accuracy, "
                        "a 2-model 1-epoch ceiling ensemble, 1,000 PNGs, 10 queue tasks; the report is marked as a smoke run")
    p.add_argument("--repeats", type=int, default=None,
                   help="repeats of the predict and scaling timed pairs (default 3; --quick 1)")
    p.add_argument("--overhead-repeats", type=int, default=None,
                   help="pairs (service, bare) of the overhead benchmark, alternating which goes first (default 5; --quick 2)")
    p.add_argument("--only", default=None,
                   help=f"comma-separated subset of {','.join(BENCHMARKS)}; the others' results are kept from "
                        "<out>/suite.json")
    p.add_argument("--out", default="bench/results", help="results folder (relative to the repo root)")
    p.add_argument("--home", default=None, help="DIGITQ_HOME for the run (default: a fresh temp dir, removed after)")
    p.add_argument("--data-dir", default=None, help="DIGITQ_DATA_DIR (default: $DIGITQ_DATA_DIR, else ../shared/data)")
    p.add_argument("--seed-epochs", type=int, default=None,
                   help=f"epochs of the seed-cnn time-to-accuracy job (default {TUTORIAL_SEED_EPOCHS}, the tutorials'; "
                        "--quick 2); it is cancelled once it reaches --seed-target")
    p.add_argument("--seed-target", type=float, default=SEED_TARGET,
                   help=f"stop the seed-cnn job when its tracked test accuracy first reaches this (default {SEED_TARGET})")
    p.add_argument("--cnn-epochs", type=int, default=None, help="epochs of the cnn time-to-accuracy job (default 5, --quick 2)")
    p.add_argument("--ceiling-k", type=int, default=None, help="models in the ceiling ensemble (default 5, --quick 2)")
    p.add_argument("--ceiling-epochs", type=int, default=None,
                   help="epochs of each ceiling ensemble member (default 20, --quick 1)")
    p.add_argument("--ceiling-augment", default="elastic,affine",
                   help="the ceiling members' augmentation, one ensemble job per entry, combined with `digitq models "
                        "combine` when there are several: affine (`--augment`) or elastic (`--augment --elastic`); "
                        "default elastic,affine")
    p.add_argument("--ceiling-job", default=None,
                   help="report these finished ensemble jobs (comma-separated, in --home's stack; combined when "
                        "several) instead of training new ones: a ceiling job takes ~1 h, so it can be run once with "
                        "`digitq submit-train` and reused")
    p.add_argument("--queue-n", type=int, default=None, help="tiny predict tasks for the queue benchmark (default 50, --quick 10)")
    p.add_argument("--predict-n", type=int, default=None, help="PNGs for the predict benchmark (default 10000, --quick 1000)")
    p.add_argument("--predict-train", action="store_true",
                   help="train a fresh 3-epoch default model for the predict benchmark instead of reusing the cnn "
                        "model of the time-to-accuracy benchmark")
    p.add_argument("--scale-images", type=int, default=None, help="training images per scaling job (default 20000, --quick 5000)")
    p.add_argument("--report", default=str(REPORT), help="Markdown report to write (default BENCHMARKS.md at the repo root)")
    p.add_argument("--plots", default=str(PLOTS), help="folder of the plots the report embeds (default bench/plots)")
    p.add_argument("--timeout", type=float, default=3600,
                   help="seconds any one command may take (the seed-cnn and ceiling jobs get more if their length needs it)")
    p.add_argument("--render-only", action="store_true",
                   help="run nothing: redraw the plots and rewrite the report from <out>/suite.json")
    args = p.parse_args(argv)
    q = args.quick

    def pick(value, quick, full):
        return value if value is not None else (quick if q else full)

    args.repeats = pick(args.repeats, 1, 3)
    args.overhead_repeats = pick(args.overhead_repeats, 2, 5)
    args.seed_epochs = pick(args.seed_epochs, 2, TUTORIAL_SEED_EPOCHS)
    args.cnn_epochs = pick(args.cnn_epochs, 2, 5)
    args.ceiling_k = pick(args.ceiling_k, 2, 5)
    args.ceiling_epochs = pick(args.ceiling_epochs, 1, 20)
    args.queue_n = pick(args.queue_n, 10, 50)
    args.predict_n = pick(args.predict_n, 1000, 10_000)
    args.scale_images = pick(args.scale_images, 5000, 20_000)
    args.selected = [b.strip() for b in args.only.split(",") if b.strip()] if args.only else list(BENCHMARKS)
    unknown = sorted(set(args.selected) - set(BENCHMARKS))
    if unknown:
        p.error(f"unknown benchmark(s) {', '.join(unknown)}: choose from {', '.join(BENCHMARKS)}")
    args.selected = [b for b in BENCHMARKS if b in args.selected]  # run order, whatever the order given
    if min(args.repeats, args.overhead_repeats, args.seed_epochs, args.cnn_epochs, args.ceiling_k,
           args.ceiling_epochs) < 1 or args.queue_n < 2:
        p.error("--repeats, --overhead-repeats, --seed-epochs, --cnn-epochs, --ceiling-k and --ceiling-epochs must be "
                ">= 1, --queue-n >= 2")
    if not 0 < args.seed_target <= 1:
        p.error(f"--seed-target is a test accuracy in (0, 1], got {args.seed_target}")
    args.data_args = list(QUICK_DATA) if q else []
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    return render_only(args) if args.render_only else run_suite(args)
