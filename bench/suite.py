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

import argparse
import base64
import json
import math
import os
import platform
import re
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "bench"
PLOTS = BENCH / "plots"
REPORT = REPO / "BENCHMARKS.md"
BENCHMARKS = ("overhead", "tta", "ceiling", "queue", "predict", "scaling", "onednn")
"""Run order: queue before predict (predict_throughput.py is the longest-running client of the stack)."""
REPORT_ORDER = ("overhead", "tta", "ceiling", "predict", "queue", "scaling", "onednn")
THRESHOLDS = (0.985, 0.990, 0.993, 0.994, 0.995)
OVERHEAD_GOAL = 1.05
"""Service wall_seconds / bare fit+eval+save, median over the pairs: at most this."""
TUTORIAL_SEED_EPOCHS = 30
SEED_TARGET = 0.994
"""The tutorials' recipe needs about 30 epochs for 99.4%: the accuracy time-to-accuracy is judged at."""
TTA_GOAL_RATIO = 10.0
"""seed-cnn / cnn training seconds to SEED_TARGET: at least this (an order of magnitude)."""
SINGLE_GOAL = 0.9965
"""Test accuracy of one augmented (--augment) model: at least this."""
ENSEMBLE_GOAL = 0.9975
"""Test accuracy of the --ensemble model: at least this."""
HISTORY_POLL = 1.0
"""Seconds between two looks at a job's history.json (an epoch takes 30-70 s)."""
TINY_ARGS = ["--epochs", "1", "--train-size", "1000", "--validation-size", "500", "--test-size", "500"]
QUICK_DATA = ["--train-size", "5000", "--validation-size", "1000", "--test-size", "2000"]


# --- configuration ------------------------------------------------------------------------------


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
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


# --- small helpers ------------------------------------------------------------------------------


def median(xs):
    xs = [x for x in xs if x is not None and not (isinstance(x, float) and math.isnan(x))]
    return statistics.median(xs) if xs else None


def percentile(xs, q):
    xs = sorted(xs)
    if not xs:
        return None
    k = (len(xs) - 1) * q / 100
    lo, hi = math.floor(k), math.ceil(k)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def fs(x, digits=1, unit=" s") -> str:
    return "-" if x is None else f"{x:,.{digits}f}{unit}"


def pct(x) -> str:
    return "-" if x is None else f"{x * 100:.0f}%"


def cpu_share(run) -> str:
    return pct(((run or {}).get("cpu") or {}).get("other_share"))


def fr(x, digits=2) -> str:
    return "-" if x is None else f"{x:.{digits}f}x"


def ms(x) -> str:
    return "-" if x is None else f"{x * 1000:,.1f} ms"


def last_json(text: str):
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{") or line.startswith("["):
            return json.loads(line)
    raise RuntimeError(f"no JSON in output:\n{text[-2000:]}")


def clean_json(obj):
    """NaN/inf -> None, recursively (strict JSON)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): clean_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean_json(v) for v in obj]
    return obj


# --- pure helpers (tests/unit/test_bench_suite.py) ------------------------------------------------

ACC_EPS = 1e-9
"""Slack when comparing a test accuracy (a multiple of 1/test images) with a threshold such as 0.994."""


def summarize(xs) -> dict:
    """values, median, min and max of the numbers in xs (None and NaN left out)."""
    vals = [x for x in xs if x is not None and not (isinstance(x, float) and math.isnan(x))]
    return {"values": vals, "median": statistics.median(vals) if vals else None,
            "min": min(vals) if vals else None, "max": max(vals) if vals else None}


def pair_ratios(runs: list[dict]) -> dict:
    """Per-pair ratios digitq/bare of the overhead benchmark's runs (each has "service" and "bare"):
    wall (service wall_seconds / bare timed_seconds), epochs (train_seconds of each) and end_to_end
    (client seconds / bare process seconds), each summarized."""
    def ratios(sk, bk):
        return [_div(r["service"].get(sk), r["bare"].get(bk)) for r in runs]
    return {"wall": summarize(ratios("wall_seconds", "timed_seconds")),
            "epochs": summarize(ratios("train_seconds", "train_seconds")),
            "end_to_end": summarize(ratios("client_seconds", "process_seconds"))}


def overhead_pairs(res: dict) -> dict:
    """The overhead result's per-pair ratios (recomputed from its runs for a suite.json older than them)."""
    return res["summary"].get("pairs") or pair_ratios(res["runs"])


def read_history(path: Path) -> list[dict]:
    """A job's history.json (written atomically by the worker after every epoch); [] until it exists."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return []
    return data if isinstance(data, list) else []


def first_reaching(history: list[dict], target: float) -> dict | None:
    """The first history entry whose tracked test accuracy reaches target, or None."""
    return next((e for e in history if (e.get("test_accuracy") or 0) >= target - ACC_EPS), None)


def reached_thresholds(history: list[dict], thresholds) -> dict:
    """{"0.990": {"seconds": train_elapsed, "epoch": n} or None, ...}: when each accuracy was first reached."""
    out = {}
    for thr in thresholds:
        hit = first_reaching(history, thr)
        out[f"{thr:.3f}"] = {"seconds": hit.get("train_elapsed"), "epoch": hit["epoch"]} if hit else None
    return out


def tta_curve(history: list[dict]) -> list[dict]:
    return [{"epoch": e["epoch"], "train_elapsed": e.get("train_elapsed"), "test_accuracy": e.get("test_accuracy"),
             "seconds": e.get("seconds")} for e in history]


def tta_goal(cnn: dict, seed: dict, target: float, goal: float = TTA_GOAL_RATIO) -> dict:
    """Whether the cnn reached `target` at least `goal` times sooner (training seconds) than the seed-cnn.

    cnn and seed are time-to-accuracy job records ("reached", "epochs", "train_seconds"). Returns status
    "met", "NOT met" or "undecided" (the seed-cnn never reached the target and its whole run, a lower
    bound of its time to it, is less than `goal` times the cnn's), the ratio (or its lower bound) and why.
    """
    k = f"{target:.3f}"
    c, s = (cnn.get("reached") or {}).get(k), (seed.get("reached") or {}).get(k)
    if not c:
        return {"status": "NOT met", "ratio": None, "lower_bound": False,
                "why": f"the cnn did not reach {target * 100:.1f}% in {cnn['epochs']} epochs"}
    if s:
        ratio = s["seconds"] / c["seconds"]
        return {"status": "met" if ratio >= goal else "NOT met", "ratio": ratio, "lower_bound": False,
                "why": f"seed-cnn {s['seconds']:.0f} s / cnn {c['seconds']:.0f} s of training = {ratio:.1f}x"}
    bound = seed["train_seconds"] / c["seconds"]
    why = (f"the seed-cnn did not reach {target * 100:.1f}% in {seed['epochs']} epochs "
           f"({seed['train_seconds']:.0f} s of training), so the ratio is more than {bound:.1f}x")
    return {"status": "met" if bound >= goal else "undecided", "ratio": bound, "lower_bound": True, "why": why}


def split_members(history: list[dict]) -> dict[int, list[dict]]:
    """An ensemble job's history by member (1-based); entries without "member" belong to member 1."""
    out: dict[int, list[dict]] = {}
    for e in history or []:
        out.setdefault(int(e.get("member", 1)), []).append(e)
    return dict(sorted(out.items()))


def ceiling_summary(result: dict, seed: int = 0) -> dict:
    """Members, their spread and the goals, from an `--ensemble K --track-test` job's result JSON."""
    per = split_members(result.get("history") or [])
    accs = list(result.get("member_accuracies") or [])
    if not accs and len(per) <= 1:  # --ensemble 1: the job's own accuracy is its one member's
        accs = [result.get("test_accuracy")]
    members = []
    for i, acc in enumerate(accs):
        hist = per.get(i + 1, [])
        tracked = [e for e in hist if e.get("test_accuracy") is not None]
        best = max(tracked, key=lambda e: e["test_accuracy"]) if tracked else None
        members.append({"member": i + 1, "seed": seed + i, "test_accuracy": acc, "epochs": len(hist),
                        "train_seconds": round(sum(e.get("seconds") or 0 for e in hist), 3),
                        "best_epoch": best["epoch"] if best else None,
                        "best_accuracy": best["test_accuracy"] if best else None,
                        "meets_single_goal": acc is not None and acc >= SINGLE_GOAL - ACC_EPS,
                        "curve": tta_curve(hist)})
    spread = summarize(m["test_accuracy"] for m in members)
    ens = result.get("test_accuracy")
    return {"members": members, "member_median": spread["median"], "member_min": spread["min"],
            "member_max": spread["max"], "ensemble_accuracy": ens,
            "members_meeting_single_goal": sum(m["meets_single_goal"] for m in members),
            "single_goal": SINGLE_GOAL, "ensemble_goal": ENSEMBLE_GOAL,
            "single_goal_met": spread["median"] is not None and spread["median"] >= SINGLE_GOAL - ACC_EPS,
            "ensemble_goal_met": ens is not None and ens >= ENSEMBLE_GOAL - ACC_EPS}


def combined_ceiling_summary(jobs: list[dict], ensemble_accuracy: float | None) -> dict:
    """`ceiling_summary` over the members of several ensemble jobs combined into one model:
    members numbered on across the jobs, each with its job's augmentation and its own seed."""
    accs, seeds, recipes = [], [], []
    for job in jobs:
        own = _member_accuracies(job)
        accs += own
        seeds += list(range(job.get("seed", 0), job.get("seed", 0) + len(own)))
        recipes += [{"augment": job.get("augment"), "model_flags": job.get("model_flags") or []}] * len(own)
    summary = ceiling_summary({"history": _merged_history(jobs), "member_accuracies": accs,
                               "test_accuracy": ensemble_accuracy})
    for member, seed, recipe in zip(summary["members"], seeds, recipes):
        member.update(seed=seed, **recipe)
    if len(jobs) > 1:
        # The single-model goal is about `--augment` models: judge it on the affine members when
        # there are any (an elastic member is a different recipe), else on all of them.
        judged = [m for m in summary["members"] if m["augment"] == "affine"] or summary["members"]
        spread = summarize(m["test_accuracy"] for m in judged)
        summary.update(single_goal_recipe=judged[0]["augment"], single_goal_members=len(judged),
                       single_goal_median=spread["median"],
                       single_goal_meeting=sum(m["meets_single_goal"] for m in judged),
                       single_goal_met=spread["median"] is not None and spread["median"] >= SINGLE_GOAL - ACC_EPS)
    return summary


def ceiling_jobs(res: dict) -> list[dict]:
    """The ensemble jobs of a ceiling result (results from before `jobs` existed had one)."""
    return res.get("jobs") or [{"job_id": res["job_id"], "augment": res.get("augment", "affine"), "k": res["k"],
                                "epochs": res["epochs"], "reused": res.get("reused"), "argv": res.get("argv"),
                                "test_accuracy": res["test_accuracy"], "model": res["model"]}]


def ceiling_recipe(res: dict) -> str:
    """The ceiling's ensemble in flags: "--augment --ensemble 5", or "5 x --augment --elastic + 5 x --augment"."""
    jobs = ceiling_jobs(res)
    if len(jobs) == 1:
        return f"{' '.join(recipe_flags(jobs[0]))} --ensemble {jobs[0]['k']}"
    return " + ".join(f"{j['k']} x {' '.join(recipe_flags(j))}" for j in jobs) + ", combined"


def ceiling_models(res: dict) -> str:
    """The ceiling's members in words for the summary table: "5 `--augment` models"."""
    return " and ".join(f"{j['k']} `{' '.join(recipe_flags(j))}` models" for j in ceiling_jobs(res))


def single_goal_words(sm: dict, k: int, flags: str | None) -> str:
    """The single-model goal row's first two cells: which members it is judged on, and how they did."""
    if "single_goal_recipe" not in sm:
        return (f"one {f'`{flags}`' if flags else 'augmented'} model >= {SINGLE_GOAL * 100:.2f}% | median of the {k} "
                f"members {sm['member_median'] * 100:.2f}% ({sm['members_meeting_single_goal']} of {k} reach it)")
    recipe = " ".join(augment_flags(sm["single_goal_recipe"]))
    n = sm["single_goal_members"]
    return (f"one `{recipe}` model >= {SINGLE_GOAL * 100:.2f}% | median of the {n} `{recipe}` members "
            f"{sm['single_goal_median'] * 100:.2f}% ({sm['single_goal_meeting']} of {n} reach it)")


def _member_recipe(member: dict) -> str:
    return f"{' '.join(recipe_flags(member))}, " if member.get("augment") else ""


def _member_accuracies(job: dict) -> list:
    """A job's member test accuracies (a one-model job: its own accuracy)."""
    return list(job.get("member_accuracies") or [job.get("test_accuracy")])


def _merged_history(jobs: list[dict]) -> list[dict]:
    """The jobs' histories as one, members numbered on across the jobs."""
    out, offset = [], 0
    for job in jobs:
        per = split_members(job.get("history") or [])
        out += [{**e, "member": m + offset} for m, entries in per.items() for e in entries]
        offset += len(_member_accuracies(job))
    return out


MODEL_FLAGS = (("conv_channels", "--conv-channels"), ("dense_units", "--dense-units"), ("dropout", "--dropout"))


def model_flags(request: dict) -> list[str]:
    """The architecture flags a job's request sets away from its arch's defaults: ["--conv-channels", "48,96,192"]."""
    out = []
    for key, flag in MODEL_FLAGS:
        value = request.get(key)
        if value is not None:
            out += [flag, ",".join(map(str, value)) if isinstance(value, list) else str(value)]
    return out


def recipe_flags(item: dict) -> list[str]:
    """A ceiling job's or member's recipe as `digitq submit-train` flags: augmentation, then architecture."""
    return [*augment_flags(item.get("augment")), *(item.get("model_flags") or [])]


def cnn_words(job: dict) -> str:
    """"the default cnn", or "the cnn at `--conv-channels 48,96,192`"."""
    flags = job.get("model_flags")
    return f"the cnn at `{' '.join(flags)}`" if flags else "the default cnn"


def augment_flags(augment: str | None) -> list[str]:
    """The `digitq submit-train` flags of an augmentation kind (affine before elastic existed)."""
    return ["--augment", "--elastic"] if augment == "elastic" else ["--augment"]


AUGMENT_WORDS = {
    "affine": "random affine augmentation (`--augment`: rotation ±10°, shear ±0.1, zoom ±10%, shift ±2 px, in one "
              "resampling)",
    "elastic": "random affine augmentation plus an elastic distortion (`--augment --elastic`: rotation ±10°, shear "
               "±0.1, zoom ±10%, shift ±2 px, and Simard's smooth displacement field, σ 5 px, α 34 px, in one "
               "resampling)",
}


def arg_value(argv: list[str], flag: str) -> str | None:
    """The value after `flag` in an argument list, or None."""
    return argv[argv.index(flag) + 1] if flag in argv[:-1] else None


def utc_now() -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())


def git_label(commit: str | None, dirty: bool) -> str | None:
    """The short commit, with "+changes" when the working tree had uncommitted changes."""
    return (commit + ("+changes" if dirty else "")) if commit else None


def format_stamp(stamp: dict | None, timing: dict | None = None) -> str:
    """The line under a report section's title: when the result was measured, on which code, how long it took."""
    if not stamp:
        return "_When this ran is not recorded._"
    parts = [f"ran {stamp.get('ran_at') or 'at an unrecorded time'}", f"git {stamp.get('git') or 'unknown'}"]
    if stamp.get("cpu"):
        parts.append(f"on {stamp['cpu']}")
    if stamp.get("repeats"):
        parts.append(f"{stamp['repeats']} repeat{'s' if stamp['repeats'] != 1 else ''}")
    if timing and timing.get("seconds") is not None:
        sec = timing["seconds"]
        parts.append(f"took {sec / 60:.1f} min" if sec >= 90 else f"took {sec:.0f} s")
    text = "_Measured: " + ", ".join(parts) + "._"
    if stamp.get("from_run"):
        text += " _(Stamp taken from its run's machine record.)_"
    if stamp.get("quick"):
        text += " **Smoke run (--quick): not real figures.**"
    return text


def cpu_label(machine: dict) -> str:
    """The CPU a section ran on, for its stamp: the model name and its vector instructions."""
    return f"{machine.get('cpu', 'unknown CPU')} ({machine.get('cpu_isa', 'instructions not recorded')})"


def backfill_stamps(doc: dict) -> None:
    """Results of a suite.json written before results were stamped get their run's date and commit."""
    m = doc.get("machine") or {}
    for name, res in (doc.get("results") or {}).items():
        if isinstance(res, dict) and "stamp" not in res:
            res["stamp"] = {"ran_at": m.get("date"), "git": git_label(m.get("git_commit"), m.get("git_dirty")),
                            "quick": bool(doc.get("quick")), "repeats": None, "from_run": True}


def load_suite_json(path: Path) -> dict | None:
    """An earlier run's suite.json, or None if there is none. A broken one stops the suite: overwriting it
    would lose the results it holds."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return None
    try:
        return json.loads(text)
    except ValueError as exc:
        raise SystemExit(f"{path} is not valid JSON ({exc}): fix or move it, or run the whole suite") from None


def kept_results(doc: dict | None, rerun) -> tuple[dict, dict]:
    """The results and timings of an earlier suite.json for the benchmarks not in `rerun`."""
    if not doc:
        return {}, {}
    backfill_stamps(doc)
    keep = [b for b in BENCHMARKS if b not in set(rerun)]
    results = {b: doc["results"][b] for b in keep if b in (doc.get("results") or {})}
    timings = {b: doc["timings"][b] for b in results if b in (doc.get("timings") or {})}
    return results, timings


CLK = os.sysconf("SC_CLK_TCK")
BUSY_WARN = 0.10
"""Share of the machine's CPU time used by other processes during a run above which it is flagged."""


def _busy_seconds() -> float:
    """CPU seconds all CPUs spent busy since boot (/proc/stat; guest time is already in user)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return (sum(v[:8]) - v[3] - v[4]) / CLK


def _pid_cpu(pid: int | None) -> float:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK  # utime, stime
    except (OSError, ValueError, IndexError, TypeError):
        return 0.0


class CpuMeter:
    """How much CPU other processes (not this suite, its children, the embedded stack or the second worker)
    used while a measurement ran: the noise a shared machine adds."""

    def __init__(self, pids):
        import resource

        self._res = resource
        self.t = time.perf_counter()
        self.busy = _busy_seconds()
        self.own = {p: _pid_cpu(p) for p in pids if p}  # pid -> its CPU seconds when first seen
        self.ru = self._rusage()
        self.adjust = 0.0

    def add(self, pid: int) -> None:
        """A process of ours that started after this meter did: all its CPU counts."""
        self.own.setdefault(pid, 0.0)

    def retire(self, pid: int, child: bool) -> None:
        """Before `pid` exits: a child's CPU will show in RUSAGE_CHILDREN once it is waited for (only the part
        before this meter started must come off); anybody else's must be taken now."""
        if pid not in self.own:
            return
        base = self.own.pop(pid)
        self.adjust += -base if child else max(0.0, _pid_cpu(pid) - base)

    def _rusage(self) -> float:
        r = self._res
        c, s = r.getrusage(r.RUSAGE_CHILDREN), r.getrusage(r.RUSAGE_SELF)
        return c.ru_utime + c.ru_stime + s.ru_utime + s.ru_stime

    def stop(self) -> dict:
        self.done = True
        wall = time.perf_counter() - self.t
        busy = _busy_seconds() - self.busy
        ours = self._rusage() - self.ru + self.adjust + sum(max(0.0, _pid_cpu(p) - c) for p, c in self.own.items())
        other = max(0.0, busy - ours)
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        return {"wall": wall, "busy_cpu_seconds": busy, "own_cpu_seconds": ours, "other_cpu_seconds": other,
                "other_share": other / (wall * cpus) if wall > 0 else None}


LOG_RE = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) (\w+) ([^\]]+)\] (.*)$")


def read_log(path: Path, offset: int = 0) -> list[tuple[float, str]]:
    """(unix time, message) of each line of a worker log written after `offset` bytes."""
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            text = f.read().decode(errors="replace")
    except OSError:
        return []
    out = []
    for line in text.splitlines():
        m = LOG_RE.match(line)
        if m:
            ts = time.mktime(time.strptime(m.group(1), "%Y-%m-%d %H:%M:%S")) + int(m.group(2)) / 1000
            out.append((ts, m.group(5)))
    return out


def job_timeline(lines, job_id: str, task: str = "digitq.train") -> dict:
    """The worker-log timestamps of one job: received, set up (data loaded), evaluating, done, succeeded."""
    tl: dict = {}
    setup_re = re.compile(rf"^job {re.escape(job_id)}: \S+ on \d+ ")
    for ts, msg in lines:
        if f"Task {task}[{job_id}] received" in msg:
            tl["received"] = ts
        elif "received" in tl:
            if "setup" not in tl and setup_re.match(msg):
                tl["setup"] = ts
            elif msg.startswith(f"job {job_id}: evaluating"):
                tl["evaluating"] = ts
            elif msg.startswith(f"job {job_id}: test accuracy"):
                tl["done"] = ts
            elif f"Task {task}[{job_id}] succeeded in " in msg:
                tl["succeeded"] = ts
                m = re.search(r"succeeded in ([0-9.eE+-]+)s", msg)
                tl["runtime"] = float(m.group(1)) if m else None
                break
    return tl


def task_runtimes(lines, task: str = "digitq.predict") -> dict:
    out = {}
    pat = re.compile(rf"Task {re.escape(task)}\[([^\]]+)\] succeeded in ([0-9.eE+-]+)s")
    for _, msg in lines:
        m = pat.search(msg)
        if m:
            out[m.group(1)] = float(m.group(2))
    return out


def git_state() -> tuple[str | None, bool]:
    """(short commit, whether tracked files have uncommitted changes) of the repository now."""
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip() or None
    dirty = bool(subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True).stdout.strip())
    return commit, dirty


def tf_default_onednn() -> bool | None:
    """Whether TensorFlow turns its oneDNN kernels on by itself on this CPU: a fresh interpreter that
    imports TensorFlow without digitq and without TF_ENABLE_ONEDNN_OPTS (None if it cannot tell)."""
    env = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    code = "from tensorflow.python.util import _pywrap_util_port as p; print(p.IsMklEnabled())"
    try:
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.TimeoutExpired):
        return None
    last = (out.stdout.strip().splitlines() or [""])[-1]
    return {"True": True, "False": False}.get(last)


def machine_info() -> dict:
    from importlib import metadata

    def version(*names):
        for n in names:
            try:
                return metadata.version(n)
            except metadata.PackageNotFoundError:
                continue
        return None

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from predict_throughput import cpu_isa, cpu_model

    cpu = cpu_model()
    mem = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    commit, dirty = git_state()
    return {"cpu": cpu, "cpu_isa": cpu_isa(), "tf_default_onednn": tf_default_onednn(), "logical_cpus": os.cpu_count(),
            "usable_cpus": usable, "memory_gib": mem,
            "python": platform.python_version(), "tensorflow": version("tensorflow-cpu", "tensorflow"),
            "keras": version("keras"), "celery": version("celery"), "redis_py": version("redis"),
            "numpy": version("numpy"), "platform": platform.platform(), "hostname": socket.gethostname(),
            "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), "git_commit": commit, "git_dirty": dirty,
            "load_average_start": list(os.getloadavg())}


# --- the suite -----------------------------------------------------------------------------------


class Suite:
    def __init__(self, args):
        self.args = args
        self.out = Path(args.out) if Path(args.out).is_absolute() else REPO / args.out
        self.out.mkdir(parents=True, exist_ok=True)
        self.plots = Path(args.plots) if Path(args.plots).is_absolute() else REPO / args.plots
        self.scratch = Path(tempfile.mkdtemp(prefix="digitq-suite-"))
        self.home = Path(args.home).expanduser().resolve() if args.home else self.scratch / "home"
        self.home.mkdir(parents=True, exist_ok=True)
        if args.data_dir:
            data_dir = Path(args.data_dir).expanduser().resolve()
        elif os.environ.get("DIGITQ_DATA_DIR"):
            data_dir = Path(os.environ["DIGITQ_DATA_DIR"]).expanduser().resolve()
        else:
            data_dir = (REPO / ".." / "shared" / "data").resolve()
        if not (data_dir / "mnist").is_dir():
            raise SystemExit(f"no MNIST in {data_dir / 'mnist'}: pass --data-dir")
        self.data_dir = data_dir
        # This process (the queue benchmark's client) and every subprocess see the same settings:
        # the embedded stack under the fresh home, one CPU device unless a benchmark says otherwise.
        for k in ("DIGITQ_BROKER_URL", "DIGITQ_RESULT_BACKEND", "DIGITQ_CPU_REPLICAS", "DIGITQ_GPUS"):
            os.environ.pop(k, None)
        os.environ.update(DIGITQ_HOME=str(self.home), DIGITQ_DATA_DIR=str(data_dir))
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        self.env = dict(os.environ)
        self.python = sys.executable
        script = Path(sys.executable).with_name("digitq")
        self.digitq = [str(script)] if script.exists() else [sys.executable, "-m", "digitq.client"]
        self.results: dict = {}
        self.timings: dict = {}
        if args.only:  # a partial rerun: the other benchmarks' results stay in suite.json and the report
            self.results, self.timings = kept_results(load_suite_json(self.out / "suite.json"), args.selected)
        self.models: dict = {}
        self.warm = False
        self.w2 = None
        self.machine = machine_info()
        self.started = time.time()

    # --- processes ------------------------------------------------------------------------------
    def log(self, msg: str) -> None:
        print(f"[suite {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    def repeats_of(self, name: str) -> int | None:
        return {"overhead": self.args.overhead_repeats, "predict": self.args.repeats,
                "scaling": self.args.repeats, "onednn": self.args.repeats}.get(name)

    def cli(self, args: list[str], check: bool = True, timeout: float | None = None) -> subprocess.CompletedProcess:
        proc = subprocess.run(self.digitq + args, env=self.env, capture_output=True, text=True,
                              timeout=timeout or self.args.timeout, stdin=subprocess.DEVNULL)
        if check and proc.returncode != 0:
            raise RuntimeError(f"`digitq {' '.join(args)}` exited {proc.returncode}:\n{proc.stderr[-3000:]}")
        return proc

    def stack_pids(self) -> list[int]:
        pids = []
        for name in ("worker.pid", "redis.pid"):
            try:
                pids.append(int((self.home / "local" / name).read_text().strip()))
            except (OSError, ValueError):
                pass
        return pids

    def meter(self) -> CpuMeter:
        """A CpuMeter that follows the stack and the second worker as they start and stop."""
        pids = self.stack_pids()
        if self.w2 is not None and self.w2.poll() is None:
            pids.append(self.w2.pid)
        m = CpuMeter(pids)
        self._meters = [x for x in getattr(self, "_meters", []) if not getattr(x, "done", False)] + [m]
        return m

    def _track(self, pids: list[int]) -> None:
        for m in getattr(self, "_meters", []):
            for p in pids:
                m.add(p)

    def _retire(self, pids: list[int], child: bool) -> None:
        for m in getattr(self, "_meters", []):
            for p in pids:
                m.retire(p, child)

    @property
    def worker_log(self) -> Path:
        return self.home / "local" / "worker.log"

    def log_offset(self, path: Path | None = None) -> int:
        try:
            return (path or self.worker_log).stat().st_size
        except OSError:
            return 0

    def local_up(self) -> float:
        t = time.perf_counter()
        self.cli(["local", "up", "--json"])
        took = time.perf_counter() - t
        self._track(self.stack_pids())
        return took

    def local_down(self) -> None:
        self._retire(self.stack_pids(), child=False)
        self.cli(["local", "down", "--json"], check=False, timeout=120)
        self.warm = False

    def ensure_warm(self) -> None:
        """The embedded stack up, its worker past its first (tiny) job."""
        if self.warm:
            return
        self.local_up()
        res = self.service_train(TINY_ARGS + ["--name", "bench-warm"])
        self.models["warm"] = res["model"]
        self.warm = True
        self.log(f"stack warm (tiny job {res['client_seconds']:.1f} s)")

    def service_train(self, args: list[str], timeout: float | None = None) -> dict:
        """`digitq submit-train --wait --json ARGS`, timed from the client, broken down with the worker log."""
        offset = self.log_offset()
        meter = self.meter()
        t0w, t0 = time.time(), time.perf_counter()
        proc = self.cli(["submit-train", "--wait", "--json", *args], timeout=timeout)
        client = time.perf_counter() - t0
        cpu = meter.stop()
        t1w = t0w + client
        res = last_json(proc.stdout)
        if res.get("state") != "SUCCESS":
            raise RuntimeError(f"job {res.get('job_id')} ended {res.get('state')}: {res.get('error')}")
        time.sleep(0.3)  # the worker's last log line
        tl = job_timeline(read_log(self.worker_log, offset), res["job_id"])
        train_s = res.get("train_seconds")
        parts = dict.fromkeys(("startup", "queue", "setup", "fit_other", "epochs", "eval_save", "bookkeeping", "tail"))
        parts["epochs"] = train_s
        sub = res.get("submitted")
        if sub:
            parts["startup"] = sub - t0w
        if all(k in tl for k in ("received", "setup", "evaluating", "done", "succeeded")) and sub:
            parts.update(queue=tl["received"] - sub, setup=tl["setup"] - tl["received"],
                         fit_other=tl["evaluating"] - tl["setup"] - train_s, eval_save=tl["done"] - tl["evaluating"],
                         bookkeeping=tl["succeeded"] - tl["done"], tail=t1w - tl["succeeded"])
        return {"job_id": res["job_id"], "client_seconds": client, "wall_seconds": res.get("wall_seconds"),
                "train_seconds": train_s, "test_accuracy": res.get("test_accuracy"), "epochs": res.get("epochs"),
                "model": res.get("model"), "model_path": res.get("model_path"), "worker": res.get("worker"),
                "train_images": res.get("train_images"), "history": res.get("history"),
                "task_runtime": tl.get("runtime"), "parts": parts, "args": args, "cpu": cpu,
                "member_accuracies": res.get("member_accuracies") or [], "members": res.get("members") or [],
                "warnings": res.get("warnings") or []}

    def bare_train(self, args: list[str], extra_env: dict | None = None) -> dict:
        """bench/bare_keras.py ARGS in a fresh process; its JSON plus the process's wall time."""
        env = {**self.env, **(extra_env or {})}
        meter = self.meter()
        t = time.perf_counter()
        proc = subprocess.run([self.python, str(BENCH / "bare_keras.py"), *args], env=env, capture_output=True,
                              text=True, timeout=self.args.timeout, stdin=subprocess.DEVNULL)
        total = time.perf_counter() - t
        cpu = meter.stop()
        if proc.returncode != 0:
            raise RuntimeError(f"bare_keras.py {' '.join(args)} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
        res = last_json(proc.stdout)
        ph = res["phases_seconds"]
        res["process_seconds"] = total
        res["cpu"] = cpu
        res["parts"] = {
            "startup": total - res["internal_seconds"] + ph["import"],
            "queue": None,
            "setup": ph["data"],
            "fit_other": ph["setup"] + ph["fit"] - res["train_seconds"],
            "epochs": res["train_seconds"],
            "eval_save": ph["eval"] + ph["save"],
            "bookkeeping": None,
            "tail": res["internal_seconds"] - sum(ph.values()),
        }
        return res

    # --- benchmarks -----------------------------------------------------------------------------
    def run(self) -> int:
        failed = 0
        try:
            for name in self.args.selected:
                self.log(f"=== {name} ===")
                t = time.perf_counter()
                load = os.getloadavg()[0]
                stamp = {"ran_at": utc_now(), "git": git_label(*git_state()), "quick": self.args.quick,
                         "repeats": self.repeats_of(name), "cpu": cpu_label(self.machine)}
                meter = self.meter()
                try:
                    self.results[name] = getattr(self, f"bench_{name}")()
                except Exception as exc:  # one broken benchmark must not lose the others
                    failed += 1
                    self.log(f"{name} FAILED: {exc}")
                    self.results[name] = {"error": f"{type(exc).__name__}: {exc}"[:3000],
                                          "traceback": traceback.format_exc()[-5000:]}
                self.results[name]["stamp"] = stamp
                cpu = meter.stop()
                self.timings[name] = {"seconds": round(time.perf_counter() - t, 1), "load_average_start": load,
                                      "load_average_end": os.getloadavg()[0], "other_share": cpu["other_share"],
                                      "other_cpu_seconds": cpu["other_cpu_seconds"]}
                self.log(f"{name} took {self.timings[name]['seconds']:.0f} s; other processes used "
                         f"{cpu['other_share'] * 100:.0f}% of the CPUs meanwhile")
                self.write_json()
        finally:
            self.stop_w2()
            self.local_down()
            self.log("embedded stack stopped")
            if not self.args.home:
                shutil.rmtree(self.scratch, ignore_errors=True)
        self.machine["load_average_end"] = list(os.getloadavg())
        self.write_json()
        self.write_plots()
        self.write_report()
        return 1 if failed else 0

    def bench_overhead(self) -> dict:
        a = self.args
        epochs = ["--epochs", "2"]
        runs = []
        for i in range(a.overhead_repeats):
            # Cold start: stack down, then `local up` + the first tiny job (worker start, TF import,
            # MNIST load), then the same tiny job warm.
            self.local_down()
            offset = self.log_offset()
            t0w, t0 = time.time(), time.perf_counter()
            up = self.local_up()
            first = self.service_train(TINY_ARGS + ["--name", "bench-warm"])
            cold_total = time.perf_counter() - t0
            ready = next((ts for ts, msg in read_log(self.worker_log, offset) if msg.endswith(" ready.")), None)
            warm_tiny = self.service_train(TINY_ARGS + ["--name", "bench-warm"])
            self.models["warm"] = warm_tiny["model"]
            self.warm = True
            cold = {"local_up_seconds": up, "first_job_seconds": first["client_seconds"], "total_seconds": cold_total,
                    "worker_ready_seconds": (ready - t0w) if ready else None,
                    "warm_job_seconds": warm_tiny["client_seconds"], "first_job": first, "warm_job": warm_tiny}
            self.log(f"cold start {i + 1}: up {up:.1f} s + first job {first['client_seconds']:.1f} s; warm tiny job "
                     f"{warm_tiny['client_seconds']:.1f} s")
            run = {"cold": cold}
            for which in (("service", "bare") if i % 2 == 0 else ("bare", "service")):
                if which == "service":
                    run["service"] = self.service_train([*epochs, *a.data_args, "--name", "bench-overhead"])
                    s = run["service"]
                    self.log(f"service {i + 1}: client {s['client_seconds']:.1f} s, wall_seconds {s['wall_seconds']:.1f}, "
                             f"epochs {s['train_seconds']:.1f} s, accuracy {s['test_accuracy']:.4f}")
                else:
                    run["bare"] = self.bare_train([*epochs, *a.data_args])
                    b = run["bare"]
                    self.log(f"bare {i + 1}: process {b['process_seconds']:.1f} s, fit+eval+save {b['timed_seconds']:.1f} s, "
                             f"epochs {b['train_seconds']:.1f} s, accuracy {b['test_accuracy']:.4f}")
            runs.append(run)
        svc = [r["service"] for r in runs]
        bare = [r["bare"] for r in runs]
        keys = ("startup", "queue", "setup", "fit_other", "epochs", "eval_save", "bookkeeping", "tail")
        summary = {
            "service_wall": median(s["wall_seconds"] for s in svc),
            "service_client": median(s["client_seconds"] for s in svc),
            "service_train": median(s["train_seconds"] for s in svc),
            "bare_timed": median(b["timed_seconds"] for b in bare),
            "bare_process": median(b["process_seconds"] for b in bare),
            "bare_train": median(b["train_seconds"] for b in bare),
            "service_accuracy": median(s["test_accuracy"] for s in svc),
            "bare_accuracy": median(b["test_accuracy"] for b in bare),
            "service_parts": {k: median(s["parts"][k] for s in svc) for k in keys},
            "bare_parts": {k: median(b["parts"][k] for b in bare) for k in keys},
            "cold": {k: median(r["cold"][k] for r in runs) for k in
                     ("local_up_seconds", "first_job_seconds", "total_seconds", "worker_ready_seconds",
                      "warm_job_seconds")},
        }
        sm = summary
        sm["ratio_wall"] = sm["service_wall"] / sm["bare_timed"]  # ratio of the medians
        sm["ratio_epochs"] = sm["service_train"] / sm["bare_train"]
        sm["ratio_end_to_end"] = sm["service_client"] / sm["bare_process"]
        # The headline: the median of the per-pair ratios. The two runs of a pair run back to back and
        # share the machine's state, so a slow spell of a shared 2-core VM mostly cancels out of their ratio.
        sm["pairs"] = pair_ratios(runs)
        sm["ratio_wall_pairs"] = sm["pairs"]["wall"]["median"]
        sm["goal_met"] = sm["ratio_wall_pairs"] <= OVERHEAD_GOAL
        w = sm["pairs"]["wall"]
        self.log(f"overhead: median per-pair ratio {w['median']:.3f} (range {w['min']:.3f}-{w['max']:.3f}), "
                 f"ratio of medians {sm['ratio_wall']:.3f}")
        sm["cold"]["cost_seconds"] = sm["cold"]["total_seconds"] - sm["cold"]["warm_job_seconds"]
        first = bare[0]
        return {"summary": summary, "runs": runs, "epochs": 2, "data_args": a.data_args,
                "train_images": first["train_images"], "validation_images": first["validation_images"],
                "test_images": first["test_images"], "global_batch": first["global_batch"],
                "tensorflow": first["tensorflow"], "keras": first["keras"]}

    def finished_job(self, job_id: str) -> dict:
        """A finished job's result (`digitq status ID --json`) and request, shaped like service_train's."""
        res = last_json(self.cli(["status", job_id, "--json"]).stdout)
        if res.get("state") != "SUCCESS":
            raise RuntimeError(f"job {job_id} is {res.get('state')}, not SUCCESS")
        folder = self.home / "jobs" / job_id
        request = json.loads((folder / "request.json").read_text())
        finished = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime((folder / "result.json").stat().st_mtime))
        return {**res, "request": request, "client_seconds": None, "cpu": None,
                "reused": {"job_id": job_id, "finished": finished}}

    def service_train_to_target(self, args: list[str], target: float, epochs: int) -> dict:
        """`digitq submit-train ARGS` (no --wait: it prints the job id), the job's history.json polled until
        its tracked test accuracy first reaches `target`, then `digitq cancel`; a job that ends first is
        taken as it is. Returns the history and how the job ended."""
        from digitq.client.api import connect
        from digitq.common.names import FINISHED_STATES

        c = connect(start_local=False)
        offset = self.log_offset()
        meter = self.meter()
        t0 = time.perf_counter()
        lines = self.cli(["submit-train", *args]).stdout.split()
        if not lines:
            raise RuntimeError("`digitq submit-train` printed no job id")
        job_id = lines[-1]
        history_path = self.home / "jobs" / job_id / "history.json"
        # 30 seed-cnn epochs take ~35 min here; leave room for a busy machine.
        deadline = time.monotonic() + max(self.args.timeout, epochs * 240 + 600)
        self.log(f"job {job_id}: polling {history_path} for test accuracy >= {target:.4f}")
        seen = len(read_history(history_path))
        while True:
            history = read_history(history_path)
            for e in history[seen:]:
                self.log(f"  epoch {e['epoch']}: test accuracy {(e.get('test_accuracy') or 0) * 100:.2f}% after "
                         f"{e.get('train_elapsed') or 0:.0f} s of training")
            seen = len(history)
            hit = first_reaching(history, target)
            if hit:
                break
            st = c.status(job_id)
            if st.state in FINISHED_STATES:
                break
            if time.monotonic() > deadline:
                self.cli(["cancel", job_id], check=False)
                raise RuntimeError(f"job {job_id} neither reached {target} nor ended within the time limit")
            time.sleep(HISTORY_POLL)
        seen_seconds = time.perf_counter() - t0
        cancel_seconds = None
        if hit:
            t = time.perf_counter()
            self.cli(["cancel", job_id])
            # The worker looks at the cancel flag every second of training; it may be in a test pass.
            while (st := c.status(job_id)).state not in FINISHED_STATES:
                if time.perf_counter() - t > 600:
                    raise RuntimeError(f"job {job_id} still {st.state} 600 s after `digitq cancel`")
                time.sleep(0.25)
            cancel_seconds = time.perf_counter() - t
            self.log(f"job {job_id}: reached {target * 100:.1f}% at epoch {hit['epoch']}; cancelled, "
                     f"{st.state} {cancel_seconds:.1f} s later")
        client = time.perf_counter() - t0
        cpu = meter.stop()
        if st.state == "FAILURE":
            raise RuntimeError(f"job {job_id} failed: {st.error}")
        if st.state == "REVOKED" and not hit:
            raise RuntimeError(f"job {job_id} was cancelled by someone else")
        time.sleep(0.3)  # the worker's last log line
        result = st.to_dict() if st.state == "SUCCESS" else {}
        history = result.get("history") or read_history(history_path)
        m = None
        for _, msg in read_log(self.worker_log, offset):
            m = m or re.match(rf"^job {re.escape(job_id)}: \S+ on (\d+) ", msg)
        train_images = result.get("train_images") or (int(m.group(1)) if m else None)
        return {"job_id": job_id, "state": st.state, "history": history, "result": result,
                "stopped_at_target": st.state == "REVOKED", "client_seconds": client, "seen_seconds": seen_seconds,
                "cancel_seconds": cancel_seconds, "train_images": train_images, "cpu": cpu}

    def bench_tta(self) -> dict:
        a = self.args
        self.ensure_warm()
        thresholds = sorted(set(THRESHOLDS) | {a.seed_target})
        jobs = {}
        self.log(f"cnn: {a.cnn_epochs} epoch(s) with --track-test")
        res = self.service_train(["--arch", "cnn", "--epochs", str(a.cnn_epochs), "--track-test", *a.data_args,
                                  "--name", "bench-tta-cnn"])
        hist = res["history"] or []
        jobs["cnn"] = {"epochs": len(hist), "epochs_requested": a.cnn_epochs, "job_id": res["job_id"],
                       "state": "SUCCESS", "stopped_at_target": False, "model": res["model"],
                       "test_accuracy": res["test_accuracy"], "wall_seconds": res["wall_seconds"],
                       "client_seconds": res["client_seconds"], "train_seconds": res["train_seconds"],
                       "train_images": res["train_images"], "curve": tta_curve(hist),
                       "reached": reached_thresholds(hist, thresholds), "cpu": res["cpu"]}
        self.models["tta-cnn"] = res["model"]
        self.log(f"cnn: test accuracy {res['test_accuracy']:.4f} after {res['train_seconds']:.0f} s of training")

        self.log(f"seed-cnn: up to {a.seed_epochs} epoch(s) with --track-test, stopped at {a.seed_target * 100:.2f}%")
        r = self.service_train_to_target(["--arch", "seed-cnn", "--epochs", str(a.seed_epochs), "--track-test",
                                          *a.data_args, "--name", "bench-tta-seed-cnn"], a.seed_target, a.seed_epochs)
        hist, result = r["history"], r["result"]
        last = hist[-1] if hist else {}
        jobs["seed-cnn"] = {
            "epochs": len(hist), "epochs_requested": a.seed_epochs, "job_id": r["job_id"], "state": r["state"],
            "stopped_at_target": r["stopped_at_target"], "model": result.get("model"),
            # a cancelled job has no final evaluation: its last tracked test accuracy stands in
            "test_accuracy": result.get("test_accuracy", last.get("test_accuracy")),
            "wall_seconds": result.get("wall_seconds"), "client_seconds": r["client_seconds"],
            "seen_seconds": r["seen_seconds"], "cancel_seconds": r["cancel_seconds"],
            "train_seconds": result.get("train_seconds", last.get("train_elapsed")), "train_images": r["train_images"],
            "curve": tta_curve(hist), "reached": reached_thresholds(hist, thresholds), "cpu": r["cpu"]}
        if result.get("model"):
            self.models["tta-seed-cnn"] = result["model"]
        ratios = {}
        for thr in thresholds:
            k = f"{thr:.3f}"
            c, sd = jobs["cnn"]["reached"][k], jobs["seed-cnn"]["reached"][k]
            ratios[k] = sd["seconds"] / c["seconds"] if c and sd else None
        goal = tta_goal(jobs["cnn"], jobs["seed-cnn"], a.seed_target)
        self.log(f"time to {a.seed_target * 100:.1f}%: goal >= {TTA_GOAL_RATIO:g}x {goal['status']}: {goal['why']}")
        return {"jobs": jobs, "ratios_seed_over_cnn": ratios, "thresholds": thresholds,
                "data_args": a.data_args, "tutorial_seed_epochs": TUTORIAL_SEED_EPOCHS, "seed_target": a.seed_target,
                "goal_ratio": TTA_GOAL_RATIO, "goal": goal}

    def bench_ceiling(self) -> dict:
        a = self.args
        self.ensure_warm()
        k, e = a.ceiling_k, a.ceiling_epochs
        # All 60,000 training images: nothing here selects or stops on the validation set, so a
        # final model has no use for holding 5,000 of them out (--quick's data args keep theirs).
        data_args = a.data_args if arg_value(a.data_args, "--validation-size") else ["--validation-size", "0",
                                                                                     *a.data_args]
        runs = []
        if a.ceiling_job:
            for job_id in a.ceiling_job.split(","):
                res = self.finished_job(job_id.strip())
                req = res["request"]
                self.log(f"ceiling: reusing finished job {res['job_id']} ({req['ensemble']} x {req['epochs']} epochs)")
                runs.append((res, None, req.get("augment") or "affine", req["ensemble"], req["epochs"], req.get("seed", 0),
                             model_flags(req)))
        else:
            for augment in a.ceiling_augment.split(","):
                argv = [*augment_flags(augment), "--ensemble", str(k), "--epochs", str(e), "--track-test", *data_args,
                        "--name", "bench-ceiling"]
                self.log(f"ceiling: digitq submit-train {' '.join(argv)} --wait --json")
                # K x E augmented cnn epochs of ~25-40 s each, plus a test pass per epoch: ~45-65 min for 5 x 20.
                res = self.service_train(argv, timeout=max(a.timeout, k * e * 120 + 900))
                runs.append((res, argv, augment, k, e, 0, []))
        jobs = []
        for res, argv, augment, jk, je, seed, mflags in runs:
            own = ceiling_summary(res, seed=0)
            accs = ", ".join(f"{m['test_accuracy'] * 100:.2f}%" for m in own["members"])
            self.log(f"ceiling: job {res['job_id']} ({' '.join(recipe_flags({'augment': augment, 'model_flags': mflags}))}): members {accs}, "
                     f"its ensemble {res['test_accuracy'] * 100:.2f}%, {res['train_seconds']:.0f} s of training")
            jobs.append({"job_id": res["job_id"], "augment": augment, "model_flags": mflags, "argv": argv, "k": jk,
                         "epochs": je, "seed": seed,
                         "reused": res.get("reused"), "model": res["model"], "test_accuracy": res["test_accuracy"],
                         "member_accuracies": res["member_accuracies"], "train_seconds": res["train_seconds"],
                         "wall_seconds": res["wall_seconds"], "client_seconds": res["client_seconds"],
                         "train_images": res["train_images"], "history": res["history"],
                         "warnings": res["warnings"], "cpu": res["cpu"]})
        model, combine_argv = jobs[0]["model"], None
        if len(jobs) > 1:
            combine_argv = ["models", "combine", *[j["model"] for j in jobs], "--name", "bench-ceiling-combined",
                            "--no-evaluate"]
            line = self.cli(combine_argv).stdout.strip()
            model = line.split()[1].rstrip(":")  # "registered NAME:VERSION: the average of ..."
            self.log(f"ceiling: `digitq {' '.join(combine_argv)}`: {line}")
        ev_argv = ["evaluate", "--model", model, "--json"]
        if arg_value(a.data_args, "--test-size"):
            ev_argv[3:3] = ["--test-size", arg_value(a.data_args, "--test-size")]
        t = time.perf_counter()
        ev = last_json(self.cli(ev_argv).stdout)
        ev_seconds = time.perf_counter() - t
        record = last_json(self.cli(["models", "show", model]).stdout)
        self.log(f"`digitq {' '.join(ev_argv)}`: accuracy {ev['accuracy'] * 100:.2f}% over {ev['images']} images "
                 f"in {ev_seconds:.1f} s")
        ensemble = jobs[0]["test_accuracy"] if len(jobs) == 1 else ev["accuracy"]
        summary = combined_ceiling_summary(jobs, ensemble)
        first = jobs[0]
        return {"k": len(summary["members"]), "epochs": first["epochs"], "augment": first["augment"],
                "argv": first["argv"], "data_args": a.data_args, "job_id": first["job_id"], "reused": first["reused"],
                "jobs": [{key: j[key] for key in ("job_id", "augment", "model_flags", "argv", "k", "epochs", "seed",
                                                  "reused", "model",
                                                  "test_accuracy", "train_seconds", "wall_seconds")} for j in jobs],
                "combine_argv": combine_argv,
                "model": model, "test_accuracy": ensemble,
                "member_accuracies": [m["test_accuracy"] for m in summary["members"]],
                "train_seconds": sum(j["train_seconds"] for j in jobs),
                "wall_seconds": sum(j["wall_seconds"] or 0 for j in jobs),
                "client_seconds": first["client_seconds"] if len(jobs) == 1 else None,
                "train_images": first["train_images"],
                "history": _merged_history(jobs),
                "warnings": sorted({w for j in jobs for w in j["warnings"] or []}),
                "cpu": first["cpu"] if len(jobs) == 1 else None, "summary": summary,
                "evaluate": {"argv": ev_argv, "seconds": ev_seconds, "accuracy": ev.get("accuracy"),
                             "loss": ev.get("loss"), "images": ev.get("images"), "dataset": ev.get("dataset"),
                             "model": ev.get("model")},
                "registry": {"kind": record.get("kind"), "members": len(record.get("members") or []),
                             "arch": record.get("arch"),
                             "test_accuracy": record.get("test_accuracy")}}

    def bench_queue(self) -> dict:
        from digitq.client.api import connect
        from digitq.common.names import PREDICT_QUEUE, PREDICT_TASK

        a = self.args
        self.ensure_warm()
        ref = self.models["warm"]
        c = connect(start_local=False)
        payload = {"model": ref, "pixels": base64.b64encode(bytes(784)).decode(), "count": 1}

        def one(poll: float) -> tuple[float, str]:
            t = time.perf_counter()
            r = c.app.send_task(PREDICT_TASK, args=[payload], queue=PREDICT_QUEUE)
            c.wait_result(r.id, timeout=120, poll=poll)
            return time.perf_counter() - t, r.id

        offset = self.log_offset()
        for _ in range(3):  # connection set-up, model load and tracing: not timed
            one(0.05)
        seq_default = [one(0.05) for _ in range(a.queue_n)]
        seq_fine = [one(0.002) for _ in range(a.queue_n)]
        t = time.perf_counter()
        ids = [c.app.send_task(PREDICT_TASK, args=[payload], queue=PREDICT_QUEUE).id for _ in range(a.queue_n)]
        sent = time.perf_counter() - t
        for i in ids:
            c.wait_result(i, timeout=300, poll=0.002)
        burst = time.perf_counter() - t
        time.sleep(0.3)
        runtimes = task_runtimes(read_log(self.worker_log, offset))

        def stats(samples):
            xs = [s for s, _ in samples]
            worker = [runtimes[i] for _, i in samples if i in runtimes]
            return {"n": len(xs), "p50": percentile(xs, 50), "p99": percentile(xs, 99), "mean": statistics.mean(xs),
                    "min": min(xs), "max": max(xs), "samples": xs,
                    "worker_p50": percentile(worker, 50), "worker_p99": percentile(worker, 99), "worker_samples": worker}

        burst_worker = [runtimes[i] for i in ids if i in runtimes]
        res = {"model": ref, "n": a.queue_n, "sequential_default_poll": stats(seq_default),
               "sequential_fine_poll": stats(seq_fine),
               "burst": {"n": a.queue_n, "send_seconds": sent, "total_seconds": burst, "jobs_per_second": a.queue_n / burst,
                         "worker_busy_seconds": sum(burst_worker),
                         "worker_bound_jobs_per_second": (len(burst_worker) / sum(burst_worker)) if burst_worker else None}}
        sd, sf = res["sequential_default_poll"], res["sequential_fine_poll"]
        self.log(f"latency p50 {sd['p50'] * 1000:.1f} ms / p99 {sd['p99'] * 1000:.1f} ms (default poll), "
                 f"p50 {sf['p50'] * 1000:.1f} ms (2 ms poll); burst {res['burst']['jobs_per_second']:.1f} jobs/s")
        return res

    def bench_predict(self) -> dict:
        a = self.args
        self.ensure_warm()
        out_json = self.out / "predict.json"
        argv = [self.python, str(BENCH / "predict_throughput.py"), "-n", str(a.predict_n),
                "--loop-sample", str(50 if a.quick else 300), "--repeats", str(a.repeats), "--out", str(out_json),
                "--home", str(self.home), "--data-dir", str(self.data_dir), "--keep", "--timeout", str(a.timeout)]
        ref = self.models.get("tta-cnn")
        if ref and not a.predict_train:
            argv += ["--model-ref", ref]
            how = (f"reused from the time-to-accuracy benchmark (default cnn, {a.cnn_epochs} epochs; "
                   "--predict-train trains a 3-epoch one instead)")
        else:
            train = ["--epochs", "3", *a.data_args, "--name", "bench-predict"]
            argv += ["--train-args", shlex.join(train)]
            how = "trained by predict_throughput.py: digitq submit-train " + shlex.join(train)
        self.log(f"predict_throughput.py -n {a.predict_n} ({how})")
        out_json.unlink(missing_ok=True)
        proc = subprocess.run(argv, env=self.env, capture_output=True, text=True, timeout=a.timeout * 2,
                              stdin=subprocess.DEVNULL)
        (self.out / "predict.log").write_text(proc.stdout + "\n--- stderr ---\n" + proc.stderr)
        m = re.search(r"scratch (\S+), DIGITQ_HOME", proc.stderr)
        if m and Path(m.group(1)).name.startswith("digitq-bench-"):
            shutil.rmtree(m.group(1), ignore_errors=True)  # --keep kept it (and the stack, which we still use)
        if proc.returncode != 0:
            raise RuntimeError(f"predict_throughput.py exited {proc.returncode}:\n{proc.stderr[-3000:]}")
        res = json.loads(out_json.read_text())
        res["how_model"] = how
        r = res["results"]
        self.log(f"(a) {r['a']['images_per_second']:,.0f}, (b) {r['b']['images_per_second']:,.0f}, "
                 f"(c) {r['c']['images_per_second']:,.0f} images/s")
        return res

    def start_w2(self) -> tuple[str, str]:
        """A second worker against the embedded broker; returns (its node name, the embedded worker's)."""
        from digitq.client.api import connect

        c = connect(start_local=False)
        broker = (self.home / "local" / "broker.url").read_text().strip()
        env = {**self.env, "DIGITQ_BROKER_URL": broker}
        node = "w2@bench"
        log = open(self.out / "w2-worker.log", "ab")
        t = time.perf_counter()
        self.w2 = subprocess.Popen([self.python, "-m", "digitq.worker", "--hostname", node], env=env, stdout=log,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=str(self.home),
                                   start_new_session=True)
        self._track([self.w2.pid])
        deadline = time.monotonic() + 300
        while not any(w.get("node") == node for w in c.workers()):
            if self.w2.poll() is not None:
                raise RuntimeError(f"the second worker exited with {self.w2.returncode}; see {self.out / 'w2-worker.log'}")
            if time.monotonic() > deadline:
                raise RuntimeError("the second worker did not announce itself within 300 s")
            time.sleep(0.5)
        others = [w["node"] for w in c.workers() if w.get("node") != node and w.get("node", "").startswith("local@")]
        if not others:
            raise RuntimeError("the embedded worker does not announce itself")
        self.log(f"second worker {node} (pid {self.w2.pid}) ready in {time.perf_counter() - t:.1f} s")
        return node, others[0]

    def stop_w2(self) -> None:
        if self.w2 is None or self.w2.poll() is not None:
            return
        self._retire([self.w2.pid], child=True)
        self.w2.send_signal(signal.SIGTERM)
        try:
            self.w2.wait(30)
        except subprocess.TimeoutExpired:
            self.w2.kill()
            self.w2.wait(10)
        self.log("second worker stopped")

    def consume(self, node: str, on: bool) -> None:
        from digitq.client.api import connect

        app = connect(start_local=False).app
        fn = app.control.add_consumer if on else app.control.cancel_consumer
        replies = fn("train", destination=[node], reply=True, timeout=10)
        if not replies:
            raise RuntimeError(f"{node} did not answer {'add' if on else 'cancel'}_consumer")

    def concurrent_jobs(self, n: int, args: list[str]) -> dict:
        """n `digitq submit-train --json` clients started at once; wall time until the last one exits."""
        meter = self.meter()
        t = time.perf_counter()
        procs = [subprocess.Popen(self.digitq + ["submit-train", "--json", *args], env=self.env, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL) for _ in range(n)]
        outs = [p.communicate(timeout=self.args.timeout) for p in procs]
        total = time.perf_counter() - t
        cpu = meter.stop()
        jobs = []
        for p, (so, se) in zip(procs, outs):
            if p.returncode != 0:
                raise RuntimeError(f"submit-train exited {p.returncode}:\n{se[-2000:]}")
            r = last_json(so)
            jobs.append({"job_id": r["job_id"], "worker": r.get("worker"), "wall_seconds": r.get("wall_seconds"),
                         "train_seconds": r.get("train_seconds"), "train_images": r.get("train_images"),
                         "images_per_second": r["train_images"] / r["train_seconds"] if r.get("train_seconds") else None})
        return {"total_seconds": total, "jobs": jobs, "workers_used": sorted({j["worker"] for j in jobs}), "cpu": cpu,
                "images_per_second": sum(j["train_images"] for j in jobs) / total}

    def bench_scaling(self) -> dict:
        a = self.args
        test = "500" if a.quick else "1000"
        common = ["--epochs", "1", "--train-size", str(a.scale_images), "--validation-size", "0", "--test-size", test]
        # (1) replicas: the bare helper with digitq's strategy over 1 or 2 logical CPU devices.
        replicas = {1: [], 2: []}
        for i in range(a.repeats):
            for k in ((1, 2) if i % 2 == 0 else (2, 1)):
                r = self.bare_train([*common, "--strategy", "mirrored", "--steady"], {"DIGITQ_CPU_REPLICAS": str(k)})
                replicas[k].append(r)
                self.log(f"replicas={k}: {r['history'][0]['images_per_second']:,.0f} images/s (epoch), "
                         f"{r['steady_images_per_second'] or 0:,.0f} (steady), global batch {r['global_batch']}")
        rep = {}
        for k, rs in replicas.items():
            rep[str(k)] = {"epoch_images_per_second": median(r["history"][0]["images_per_second"] for r in rs),
                           "steady_images_per_second": median(r["steady_images_per_second"] for r in rs),
                           "fit_seconds": median(r["phases_seconds"]["fit"] for r in rs),
                           "global_batch": rs[0]["global_batch"], "replicas_seen": rs[0]["replicas"],
                           "test_accuracy": median(r["test_accuracy"] for r in rs),
                           "other_share": median((r.get("cpu") or {}).get("other_share") for r in rs),
                           "runs": [{"epoch_images_per_second": r["history"][0]["images_per_second"],
                                     "steady_images_per_second": r["steady_images_per_second"],
                                     "fit_seconds": r["phases_seconds"]["fit"], "process_seconds": r["process_seconds"],
                                     "cpu": r.get("cpu")}
                                    for r in rs]}
        # (2) workers: two concurrent jobs on the embedded worker alone, then with a second worker.
        self.ensure_warm()
        w2, w1 = self.start_w2()
        workers = {1: [], 2: []}
        try:
            self.consume(w1, False)  # warm the second worker with a tiny job of its own
            try:
                self.service_train(TINY_ARGS + ["--name", "bench-warm"])
            finally:
                self.consume(w1, True)
            for i in range(a.repeats):
                for k in ((1, 2) if i % 2 == 0 else (2, 1)):
                    self.consume(w2, k == 2)
                    r = self.concurrent_jobs(2, [*common, "--name", "bench-scale"])
                    workers[k].append(r)
                    self.log(f"{k} worker(s): 2 jobs in {r['total_seconds']:.1f} s on {', '.join(r['workers_used'])}")
        finally:
            self.stop_w2()
        wk = {}
        for k, rs in workers.items():
            wk[str(k)] = {"total_seconds": median(r["total_seconds"] for r in rs),
                          "images_per_second": median(r["images_per_second"] for r in rs),
                          "job_wall_seconds": median(j["wall_seconds"] for r in rs for j in r["jobs"]),
                          "job_images_per_second": median(j["images_per_second"] for r in rs for j in r["jobs"]),
                          "all_on_distinct_workers": all(len(r["workers_used"]) == k for r in rs),
                          "other_share": median((r.get("cpu") or {}).get("other_share") for r in rs), "runs": rs}
        return {"train_images": a.scale_images, "test_images": int(test), "replicas": rep, "workers": wk,
                "replica_speedup_steady": _div(rep["2"]["steady_images_per_second"], rep["1"]["steady_images_per_second"]),
                "replica_speedup_epoch": _div(rep["2"]["epoch_images_per_second"], rep["1"]["epoch_images_per_second"]),
                "worker_speedup": _div(wk["1"]["total_seconds"], wk["2"]["total_seconds"])}

    def bench_onednn(self) -> dict:
        """The worker's oneDNN default (devices.prefer_onednn) against TensorFlow's own choice on this CPU."""
        a = self.args
        args = ["--epochs", "1", "--train-size", str(a.scale_images), "--validation-size", "0", "--steady"]
        runs = {"0": [], "1": []}
        for i in range(a.repeats):
            for v in (("0", "1") if i % 2 == 0 else ("1", "0")):
                r = self.bare_train(args, {"TF_ENABLE_ONEDNN_OPTS": v})
                if r.get("onednn") is not None and r["onednn"] != (v == "1"):
                    raise RuntimeError(f"TF_ENABLE_ONEDNN_OPTS={v} but TensorFlow reports oneDNN {r['onednn']}")
                runs[v].append(r)
                self.log(f"oneDNN {'on' if v == '1' else 'off'}: {r['steady_images_per_second'] or 0:,.0f} images/s "
                         f"training (steady), test evaluation {r['phases_seconds']['eval']:.2f} s, "
                         f"accuracy {r['test_accuracy']:.4f}")
        sides = {}
        for v, rs in runs.items():
            sides[v] = {"steady_images_per_second": median(r["steady_images_per_second"] for r in rs),
                        "epoch_images_per_second": median(r["history"][0]["images_per_second"] for r in rs),
                        "eval_seconds": median(r["phases_seconds"]["eval"] for r in rs),
                        "eval_images_per_second": median(r["test_images"] / r["phases_seconds"]["eval"] for r in rs),
                        "test_accuracy": median(r["test_accuracy"] for r in rs),
                        "other_share": median((r.get("cpu") or {}).get("other_share") for r in rs),
                        "runs": [{"steady_images_per_second": r["steady_images_per_second"],
                                  "epoch_images_per_second": r["history"][0]["images_per_second"],
                                  "eval_seconds": r["phases_seconds"]["eval"], "test_accuracy": r["test_accuracy"],
                                  "onednn": r.get("onednn"), "cpu": r.get("cpu")} for r in rs]}
        off, on = sides["0"], sides["1"]
        return {"train_images": a.scale_images, "test_images": runs["1"][0]["test_images"],
                "cpu": cpu_label(self.machine), "tf_default": self.machine.get("tf_default_onednn"),
                "sides": sides,
                "train_speedup": _div(on["steady_images_per_second"], off["steady_images_per_second"]),
                "eval_speedup": _div(on["eval_images_per_second"], off["eval_images_per_second"])}

    # --- outputs --------------------------------------------------------------------------------
    rendered_seconds: float | None = None  # set by --render-only: the recorded run's length

    def elapsed(self) -> float:
        """Seconds of the run so far (or, re-rendering, of the recorded run)."""
        return self.rendered_seconds if self.rendered_seconds is not None else time.time() - self.started

    def write_json(self) -> None:
        doc = {"quick": self.args.quick, "args": {k: v for k, v in vars(self.args).items()},
               "machine": self.machine, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(self.started)),
               "suite_seconds": round(self.elapsed(), 1), "timings": self.timings, "results": self.results}
        (self.out / "suite.json").write_text(json.dumps(clean_json(doc), indent=2, default=str) + "\n")

    def write_plots(self) -> None:
        try:
            import matplotlib

            matplotlib.use("Agg")
        except ImportError:
            self.log("matplotlib is not installed: no plots (pip install matplotlib)")
            self.plot_files = {}
            return
        self.plots.mkdir(parents=True, exist_ok=True)
        self.plot_files = {}
        for name in BENCHMARKS:  # kept results too: their plots are redrawn from suite.json
            res = self.results.get(name)
            if not res or "error" in res:
                continue
            self._quick_plot = bool((res.get("stamp") or {}).get("quick", self.args.quick))
            try:
                path = self.plots / f"{name}.png"
                getattr(self, f"plot_{name}")(res, path)
                shutil.copy(path, self.out / path.name)
                self.plot_files[name] = path
            except Exception as exc:
                self.log(f"plot {name} failed: {exc}")
                traceback.print_exc()

    def _title(self, ax_or_fig, text: str) -> None:
        if getattr(self, "_quick_plot", self.args.quick):
            text += "\nSMOKE RUN (--quick): small data, not real figures"
        ax_or_fig.suptitle(text, fontsize=11) if hasattr(ax_or_fig, "suptitle") else ax_or_fig.set_title(text, fontsize=11)

    @staticmethod
    def _save(fig, path: Path) -> None:
        import matplotlib.pyplot as plt

        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)

    def plot_overhead(self, res: dict, path: Path) -> None:
        import matplotlib.pyplot as plt

        s = res["summary"]
        labels = [("startup", "start-up / TF import"), ("queue", "queue"), ("setup", "data loading"),
                  ("fit_other", "build, compile, fit outside epochs"), ("epochs", "epochs"),
                  ("eval_save", "test eval + save"), ("bookkeeping", "registry + result"), ("tail", "result pick-up, exit")]
        colors = plt.get_cmap("tab10").colors
        pairs = overhead_pairs(res)
        fig, (ax, ax2, ax3) = plt.subplots(1, 3, figsize=(15.5, 4.8), gridspec_kw={"width_ratios": [3, 1.3, 1.6]})
        for row, (who, parts) in enumerate((("bare Keras\n(fresh process)", s["bare_parts"]),
                                            ("digitq\nsubmit-train", s["service_parts"]))):
            left = 0.0
            for j, (k, lab) in enumerate(labels):
                v = parts.get(k) or 0.0
                if v <= 0:
                    continue
                ax.barh(row, v, left=left, color=colors[j], label=lab if row == 1 or k in ("startup", "setup") else None,
                        edgecolor="white")
                if v > 0.04 * max(s["service_client"], s["bare_process"]):
                    ax.text(left + v / 2, row, f"{v:.1f}", ha="center", va="center", fontsize=8, color="white")
                left += v
            ax.text(left, row, f"  {left:.1f} s", va="center", fontsize=9)
        ax.set_yticks([0, 1], ["bare Keras\n(fresh process)", "digitq\nsubmit-train"])
        ax.set_xlabel("seconds (median)")
        handles, lbls = ax.get_legend_handles_labels()
        uniq = dict(zip(lbls, handles))
        ax.legend(uniq.values(), uniq.keys(), fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=4,
                  frameon=False)
        ax.set_xlim(0, max(s["service_client"], s["bare_process"]) * 1.15)
        ax.set_title(f"{res['epochs']} epochs on {res['train_images']:,} images, medians of {len(res['runs'])} "
                     f"pair(s): service wall_seconds / bare fit+eval+save = {s['ratio_wall']:.3f}", fontsize=9)
        cold = s["cold"]
        vals = [cold["local_up_seconds"], cold["first_job_seconds"], cold["warm_job_seconds"]]
        ax2.bar(["local up", "first tiny\njob (cold)", "tiny job\n(warm)"], vals, color=[colors[7], colors[3], colors[2]])
        for x, v in enumerate(vals):
            ax2.text(x, v, f"{v:.1f} s", ha="center", va="bottom", fontsize=8)
        ax2.set_ylabel("seconds (median)")
        ax2.set_ylim(0, max(v or 0 for v in vals) * 1.2)
        ax2.set_title(f"cold start costs {cold['cost_seconds']:.1f} s", fontsize=9)
        n = len(res["runs"])
        xs = list(range(1, n + 1))
        for key, marker, lab in (("wall", "o", "in-job wall time"), ("epochs", "s", "epochs only")):
            vals = [_div(r["service"].get("wall_seconds" if key == "wall" else "train_seconds"),
                         r["bare"].get("timed_seconds" if key == "wall" else "train_seconds")) for r in res["runs"]]
            ax3.plot(xs, vals, marker, ls=":", label=f"{lab}: median {pairs[key]['median']:.3f}",
                     color=colors[0] if key == "wall" else colors[1], ms=6)
        ax3.axhline(pairs["wall"]["median"], color=colors[0], lw=1)
        ax3.axhline(OVERHEAD_GOAL, color="red", lw=1, ls="--", label=f"goal <= {OVERHEAD_GOAL}")
        ax3.axhline(1.0, color="grey", lw=0.6)
        ax3.set_xticks(xs, [f"{i}\n{'d' if i % 2 else 'b'} first" for i in xs], fontsize=7)
        ax3.set_xlim(0.5, n + 0.5)
        vals_all = [v for k in ("wall", "epochs") for v in pairs[k]["values"]] + [OVERHEAD_GOAL, 1.0]
        ax3.set_ylim(min(vals_all) - 0.05, max(vals_all) + 0.08)
        ax3.set_xlabel("pair (d = digitq, b = bare ran first)", fontsize=8)
        ax3.set_ylabel("digitq / bare, same pair")
        ax3.legend(fontsize=7, loc="upper right")
        ax3.set_title(f"per-pair ratios: headline = median {pairs['wall']['median']:.3f}", fontsize=9)
        self._title(fig, "Training overhead: digitq vs bare Keras")
        self._save(fig, path)

    def plot_tta(self, res: dict, path: Path) -> None:
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(8, 4.8))
        accs = []
        for arch, style in (("cnn", "o-"), ("seed-cnn", "s-")):
            j = res["jobs"][arch]
            xs = [e["train_elapsed"] for e in j["curve"]]
            ys = [e["test_accuracy"] * 100 for e in j["curve"]]
            accs += ys
            ax.plot(xs, ys, style, label=_tta_label(arch, j, res))
            for x, y, e in zip(xs, ys, j["curve"]):
                ax.annotate(str(e["epoch"]), (x, y), textcoords="offset points", xytext=(3, -10), fontsize=7)
        lo = min(98.0, math.floor(min(accs) - 0.5)) if accs else 98.0
        ax.set_ylim(lo, 100)
        ax.set_xlim(left=0)
        yx = ax.get_yaxis_transform()  # x in axes fractions, y in data
        target = res.get("seed_target")
        if target is not None:
            ax.axhline(target * 100, color="red", lw=0.9, ls="--",
                       label=f"target {target * 100:.1f}% (the seed-cnn is stopped on reaching it)")
            for arch in ("cnn", "seed-cnn"):
                hit = res["jobs"][arch]["reached"].get(f"{target:.3f}")
                if hit:
                    ax.plot([hit["seconds"]], [target * 100], "r*", ms=11, zorder=5)
        for thr in res["thresholds"]:
            ax.axhline(thr * 100, color="grey", lw=0.6, ls=":")
            if 100 - lo <= 8:  # far enough apart to label each, right of the plot
                ax.text(1.005, thr * 100, f"{thr * 100:.1f}%", transform=yx, va="center", fontsize=7, color="grey")
        if 100 - lo > 8:
            ax.text(1.005, res["thresholds"][0] * 100, "dotted:\n" + "\n".join(f"{t * 100:.1f}%" for t in res["thresholds"]),
                    transform=yx, va="top", fontsize=7, color="grey")
        ax.set_xlabel("training seconds (train_elapsed: epochs only, test passes excluded)")
        ax.set_ylabel("MNIST test accuracy (%)")
        ax.legend(loc="lower right", fontsize=8)
        ax.grid(alpha=0.3)
        goal = res.get("goal")
        head = "Time to accuracy (epoch numbers at the points)"
        if goal:
            ratio = ("cnn did not reach it" if goal["ratio"] is None else
                     f"{'> ' if goal['lower_bound'] else ''}{goal['ratio']:.1f}x")
            head += f"\nseed-cnn / cnn at {target * 100:.1f}%: {ratio} (goal >= {res['goal_ratio']:g}x: {goal['status']})"
        self._title(ax, head)
        self._save(fig, path)

    def plot_ceiling(self, res: dict, path: Path) -> None:
        import matplotlib.pyplot as plt

        sm = res["summary"]
        fig, ax = plt.subplots(figsize=(8.5, 5))
        colors = plt.get_cmap("tab10").colors
        accs = []
        for m in sm["members"]:
            pts = [(e["epoch"], e["test_accuracy"] * 100) for e in m["curve"] if e.get("test_accuracy") is not None]
            accs += [y for _, y in pts]
            ax.plot([x for x, _ in pts], [y for _, y in pts], "o-", ms=3, lw=1, color=colors[(m["member"] - 1) % 10],
                    label=f"member {m['member']} ({_member_recipe(m)}seed {m['seed']}): "
                          f"final {m['test_accuracy'] * 100:.2f}%")
        ens = sm["ensemble_accuracy"]
        lines = [(ens, "black", "-", 1.6, f"ensemble of {res['k']} (averaged): {ens * 100:.2f}%"),
                 (sm["single_goal"], "tab:orange", "--", 1.0, f"goal, one augmented model: {sm['single_goal'] * 100:.2f}%"),
                 (sm["ensemble_goal"], "tab:red", "--", 1.0, f"goal, ensemble: {sm['ensemble_goal'] * 100:.2f}%")]
        for y, color, ls, lw, lab in lines:
            ax.axhline(y * 100, color=color, ls=ls, lw=lw, label=lab)
        top = max(accs + [ens * 100, sm["ensemble_goal"] * 100])
        # The interesting range is the top 1.5%, down to the worst final accuracy; early epochs may fall below it.
        finals = [m["test_accuracy"] * 100 for m in sm["members"] if m["test_accuracy"] is not None] + [ens * 100]
        lo = min(min(finals) - 0.5, top - 1.5)
        ax.set_ylim(lo, min(100, top + 0.15))
        ax.set_xlim(0.5, max(res["epochs"], 1) + 0.5)
        if res["epochs"] <= 25:
            ax.set_xticks(range(1, res["epochs"] + 1))
        ax.set_xlabel("epoch (of each member; members train one after another)")
        ax.set_ylabel("MNIST test accuracy (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
        took = res["train_seconds"]
        self._title(ax, f"Accuracy ceiling: {ceiling_recipe(res)}, {_n(res['epochs'], 'epoch')} each "
                        f"({f'{took / 60:.0f} min' if took >= 120 else f'{took:.0f} s'} of training)")
        self._save(fig, path)

    def plot_queue(self, res: dict, path: Path) -> None:
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(8, 4.5))
        for key, label in (("sequential_default_poll", "round trip, wait_result default poll (50 ms, x1.5)"),
                           ("sequential_fine_poll", "round trip, 2 ms poll")):
            xs = sorted(v * 1000 for v in res[key]["samples"])
            ax.plot(xs, [(i + 1) / len(xs) for i in range(len(xs))], drawstyle="steps-post", label=label)
        wk = sorted(v * 1000 for v in res["sequential_fine_poll"]["worker_samples"])
        if wk:
            ax.plot(wk, [(i + 1) / len(wk) for i in range(len(wk))], drawstyle="steps-post", ls="--",
                    label="worker's own task time (worker.log)")
        ax.set_xlabel("milliseconds")
        ax.set_ylabel("fraction of tasks (cumulative)")
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
        b = res["burst"]
        self._title(ax, f"Queue latency of {res['n']} tiny predict tasks, one at a time; "
                        f"{res['n']} at once: {b['jobs_per_second']:.1f} tasks/s")
        self._save(fig, path)

    def plot_predict(self, res: dict, path: Path) -> None:
        import matplotlib.pyplot as plt

        r = res["results"]
        labels = ["(a) bare Keras\nmodel.predict", "(b) tutorial\nper-image loop", "(c) digitq predict\nend to end"]
        vals = [r[k]["images_per_second"] for k in "abc"]
        fig, ax = plt.subplots(figsize=(8, 3.8))
        bars = ax.barh(labels, vals, color=["#4c72b0", "#c44e52", "#55a868"])
        ax.set_xscale("log")
        for bar, k in zip(bars, "abc"):
            acc = r[k].get("accuracy")
            ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2,
                    f"  {r[k]['images_per_second']:,.0f}/s" + (f", acc {acc * 100:.2f}%" if acc is not None else ""),
                    va="center", fontsize=8)
        ax.set_xlim(right=max(vals) * 8)
        ax.invert_yaxis()
        ax.set_xlabel("images per second (log scale)")
        self._title(ax, f"Prediction throughput, {res['n']:,} MNIST test PNGs")
        self._save(fig, path)

    def plot_scaling(self, res: dict, path: Path) -> None:
        import matplotlib.pyplot as plt

        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
        rep = res["replicas"]
        x = [0, 1]
        for off, key, lab in ((-0.2, "steady_images_per_second", "steady (after warm-up batches)"),
                              (0.2, "epoch_images_per_second", "whole epoch (incl. tracing)")):
            vals = [rep[str(k)][key] or 0 for k in (1, 2)]
            ax1.bar([v + off for v in x], vals, width=0.4, label=lab)
            for xi, v in zip(x, vals):
                ax1.text(xi + off, v, f"{v:,.0f}", ha="center", va="bottom", fontsize=8)
            for xi, k in zip(x, (1, 2)):
                pts = [r[key] for r in rep[str(k)]["runs"] if r[key]]
                ax1.plot([xi + off] * len(pts), pts, "k.", ms=4)
        ax1.set_xticks(x, [f"DIGITQ_CPU_REPLICAS=1\n(global batch {rep['1']['global_batch']})",
                           f"DIGITQ_CPU_REPLICAS=2\n(global batch {rep['2']['global_batch']})"])
        ax1.set_ylabel("training images/s (median; dots = runs)")
        ax1.set_ylim(0, max(rep[str(k)][key] or 0 for k in (1, 2) for key in
                            ("steady_images_per_second", "epoch_images_per_second")) * 1.3)
        ax1.legend(fontsize=8, loc="upper center", ncol=2)
        ax1.set_title(f"replicas (bare helper, {res['train_images']:,} images, 1 epoch)", fontsize=9)
        wk = res["workers"]
        vals = [wk[str(k)]["total_seconds"] for k in (1, 2)]
        ax2.bar(["1 worker", "2 workers"], vals, color=["#4c72b0", "#55a868"])
        for xi, k in enumerate((1, 2)):
            ax2.text(xi, vals[xi], f"{vals[xi]:.1f} s", ha="center", va="bottom", fontsize=8)
            pts = [r["total_seconds"] for r in wk[str(k)]["runs"]]
            ax2.plot([xi] * len(pts), pts, "k.", ms=4)
        ax2.set_ylabel("seconds until both jobs finished (median)")
        ax2.set_ylim(0, max(vals) * 1.15)
        ax2.set_title(f"2 concurrent jobs of {res['train_images']:,} images: speed-up "
                      f"{res['worker_speedup'] or 0:.2f}x", fontsize=9)
        self._title(fig, f"Scaling on {self.machine['usable_cpus']} CPU cores")
        self._save(fig, path)

    # --- the report -------------------------------------------------------------------------------
    def plot_onednn(self, res: dict, path: Path) -> None:
        import matplotlib.pyplot as plt

        off, on = res["sides"]["0"], res["sides"]["1"]
        fig, ax = plt.subplots(figsize=(8, 3.4))
        groups = [("training (steady)", "steady_images_per_second"), ("test evaluation", "eval_images_per_second")]
        for j, (label, color, side) in enumerate((("oneDNN off", "#c44e52", off), ("oneDNN on", "#55a868", on))):
            vals = [side[key] or 0 for _, key in groups]
            bars = ax.barh([i + j * 0.38 for i in range(len(groups))], vals, height=0.36, color=color, label=label)
            for bar, v in zip(bars, vals):
                ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, f"  {v:,.0f}/s", va="center", fontsize=8)
        ax.set_yticks([i + 0.19 for i in range(len(groups))], [g for g, _ in groups])
        ax.set_xlim(0, max(side[key] or 0 for side in (off, on) for _, key in groups) * 1.18)
        ax.set_xlabel("images per second")
        ax.grid(alpha=0.3, axis="x")
        ax.legend(fontsize=8, loc="lower right")
        self._title(ax, f"TensorFlow's oneDNN kernels on {res['cpu']}: training {fr(res['train_speedup'])}")
        self._save(fig, path)

    def write_report(self) -> None:
        report = Path(self.args.report)
        report = report if report.is_absolute() else REPO / report
        text = render_report(self, report.parent)
        report.write_text(text)
        self.log(f"wrote {report}, {self.out / 'suite.json'}, plots in {self.plots}")


def _sub(a, b):
    return a - b if a is not None and b is not None else None


def _div(a, b):
    return a / b if a is not None and b else None


def _rel(path: Path, base: Path) -> str:
    return os.path.relpath(path, base).replace(os.sep, "/")


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _tta_label(arch: str, j: dict, res: dict) -> str:
    if arch == "cnn":
        return f"cnn (digitq default), {j['epochs']} epochs"
    target = res.get("seed_target")
    if j.get("stopped_at_target"):
        return f"seed-cnn (tutorials), stopped at {target * 100:.1f}% after {j['epochs']} of {j['epochs_requested']} epochs"
    if j["epochs"] < TUTORIAL_SEED_EPOCHS:
        return f"seed-cnn (tutorials), {j['epochs']} of {TUTORIAL_SEED_EPOCHS} epochs (capped)"
    return f"seed-cnn (tutorials), {j['epochs']} epochs" + (f", {target * 100:.1f}% not reached" if target else "")


SECTION_TITLES = {
    "overhead": "Training overhead: `digitq submit-train` vs bare Keras",
    "tta": "Time to accuracy: default cnn vs the tutorials' seed-cnn",
    "ceiling": "Accuracy ceiling: `--augment` (`--elastic`) and `--ensemble`",
    "predict": "Prediction throughput",
    "queue": "Queue latency and throughput",
    "scaling": "Scaling: replicas and workers",
    "onednn": "CPU kernels: TensorFlow's oneDNN on or off",
}


def render_report(suite: Suite, base: Path) -> str:
    a, m, R = suite.args, suite.machine, suite.results
    rerun = [b for b in a.selected if b in R]
    kept = [b for b in BENCHMARKS if b in R and b not in rerun]
    this_run = {k: v for k, v in suite.timings.items() if k in rerun}
    total_min = suite.elapsed() / 60
    per_bench = ", ".join(f"{k} {v['seconds'] / 60:.1f}" for k, v in this_run.items())
    timings = [(b, suite.timings[b]) for b in BENCHMARKS if b in suite.timings]
    noise = ", ".join(f"{k} {pct(v.get('other_share'))}" for k, v in timings)
    noisy = [k for k, v in timings if (v.get("other_share") or 0) > BUSY_WARN]
    smoke = [b for b in BENCHMARKS if b in R and (R[b].get("stamp") or {}).get("quick")]
    L = []
    if smoke:
        which = "" if len(smoke) == len(R) else f" (sections: {', '.join(smoke)})"
        L += [f"> **SMOKE RUN — NOT REAL FIGURES{which}.** These numbers come from `bench/suite.py --quick`: 5,000",
              "> training images, 1 repeat (2 overhead pairs), 2 epochs for time-to-accuracy, a 2-model 1-epoch",
              "> ensemble, 1,000 PNGs, 10 queue tasks, on a machine shared with other work. They only show that the",
              "> suite runs end to end. Rerun the full suite (below) on a quiet machine before quoting anything.", ""]
    L += ["# digitq benchmarks", "",
          "Every benchmark runs side by side with its competitor, on one machine, by one command. Timed pairs are",
          "repeated, alternating which side goes first, and the medians are reported. Time to accuracy and the",
          "accuracy ceiling run once. Under each section's title: when it ran, on which commit (`+changes`: with",
          "uncommitted changes) and how long it took. A partial rerun (`--only`) keeps the other sections' results.", "",
          "## How to rerun", "", "```bash",
          ".venv/bin/python bench/suite.py            # full run: ~1.5-2 h on 2 cores; rewrites this file",
          ".venv/bin/python bench/suite.py --quick    # smoke run: ~4 min, marks this file as a smoke run",
          ".venv/bin/python bench/suite.py --only ceiling   # rerun one benchmark; the others are kept from suite.json",
          ".venv/bin/python bench/suite.py --render-only    # redraw the plots and this file from suite.json",
          "```", "",
          "Durations on 2 cores (a cnn epoch takes ~21-40 s here, a seed-cnn epoch ~42-80 s): `overhead` ~12 min",
          "(`--overhead-repeats`, default 5 pairs of 2-epoch jobs, plus a cold start each); `tta` ~10-40 min (the",
          "cnn's 5 epochs, then the seed-cnn with `--epochs 30` (`--seed-epochs`), cancelled as soon as it reaches",
          "`--seed-target`, default 99.4%); `ceiling` ~1 h (`--ceiling-k` 5 models x `--ceiling-epochs` 20);",
          "`queue` under 1 min; `predict`, `scaling` and `onednn` ~3-5 min each (`--repeats`, default 3).", "",
          "It needs the `worker` extra and matplotlib (`pip install matplotlib`, for the plots), and the four MNIST",
          "files in `$DIGITQ_DATA_DIR/mnist` (default `../shared/data`). It starts the embedded stack in a fresh",
          "`DIGITQ_HOME` and stops it at the end. Raw results: `bench/results/suite.json` (committed; `predict.json`",
          "and the logs next to it are not); plots: `bench/plots/`.", "",
          "## Machine", "",
          "| | |", "| --- | --- |",
          f"| CPU | {m['cpu']}{' (' + m['cpu_isa'] + ')' if m.get('cpu_isa') else ''}, {m['logical_cpus']} logical "
          f"CPUs ({m['usable_cpus']} usable){_onednn_words(m)} |",
          f"| memory | {m['memory_gib']} GiB |",
          f"| software | Python {m['python']}, TensorFlow {m['tensorflow']}, Keras {m['keras']}, Celery {m['celery']}, "
          f"redis-py {m['redis_py']}, NumPy {m['numpy']} |",
          f"| OS | {m['platform']} |",
          f"| date of the last run | {m['date']} |",
          f"| code of the last run | git {m['git_commit']}{' (uncommitted changes)' if m['git_dirty'] else ''} |",
          f"| load average (1 min) | {m['load_average_start'][0]:.2f} at start, "
          f"{m.get('load_average_end', [float('nan')])[0]:.2f} at end |",
          f"| last run's time | {total_min:.1f} min ({per_bench or 'nothing'}{' min' if per_bench else ''}) |"]
    if kept:
        L.append("| kept from earlier runs | " + "; ".join(
            f"{b} ({(R[b].get('stamp') or {}).get('ran_at') or 'date unknown'}, git "
            f"{(R[b].get('stamp') or {}).get('git') or 'unknown'})" for b in kept) + " |")
    elsewhere = [b for b in BENCHMARKS if b in R and (R[b].get("stamp") or {}).get("cpu") != cpu_label(m)]
    if elsewhere and m.get("cpu_isa"):
        L.append(f"| measured on another CPU, or one not recorded | {', '.join(elsewhere)}: each section's stamp names "
                 "its CPU where it was recorded; compare their times with care |")
    L += [f"| CPU used by other processes meanwhile (share of all cores; /proc/stat minus this suite, its "
          f"children, the embedded stack and the second worker) | {noise} |", ""]
    if noisy:
        L += [f"**Warning: the machine was not quiet.** Other processes used more than {BUSY_WARN:.0%} of the CPUs "
              f"during {', '.join(noisy)} (per-run shares in the tables below), so those timings are disturbed by "
              "whatever else ran; rerun on a quiet machine before drawing conclusions.", ""]
    L += _summary(suite)
    for number, name in enumerate(REPORT_ORDER, 1):
        res = R.get(name)
        L += [f"## {number}. {SECTION_TITLES[name]}", ""]
        if res is None:
            L += [f"Not run yet (`bench/suite.py --only {name}`).", ""]
            continue
        L += [format_stamp(res.get("stamp"), suite.timings.get(name)), ""]
        if "error" in res:
            L += ["**FAILED:**", "", "```", res["error"][-2000:], "```", ""]
            continue
        L += globals()[f"_section_{name}"](suite, res)
        plot = getattr(suite, "plot_files", {}).get(name)
        if plot:
            L += [f"![{name}]({_rel(plot, base)})", ""]
    return "\n".join(L).rstrip() + "\n"


def _onednn_words(m: dict) -> str:
    if m.get("tf_default_onednn") is None:
        return ""
    return (f"; TensorFlow's oneDNN kernels: {'on' if m['tf_default_onednn'] else 'off'} by TensorFlow's own "
            "default, on in digitq's worker")


def _summary(suite: Suite) -> list[str]:
    R = suite.results
    rows = []
    o = R.get("overhead")
    if o and "error" not in o:
        s = o["summary"]
        w = overhead_pairs(o)["wall"]
        met = w["median"] <= OVERHEAD_GOAL
        rows.append(f"| training overhead | bare Keras script | service wall_seconds / bare fit+eval+save, median of "
                    f"{len(w['values'])} per-pair ratios = **{w['median']:.3f}** (range {w['min']:.3f}-{w['max']:.3f}; "
                    f"ratio of medians {s['ratio_wall']:.3f}; end to end {s['ratio_end_to_end']:.2f}) | "
                    f"<= {OVERHEAD_GOAL} ({'met' if met else 'NOT met'}) |")
        rows.append(f"| cold start | warm stack | `local up` + first tiny job {fs(s['cold']['total_seconds'])} vs "
                    f"{fs(s['cold']['warm_job_seconds'])} warm: **+{fs(s['cold']['cost_seconds'])}** | - |")
    t = R.get("tta")
    if t and "error" not in t:
        target = t.get("seed_target", THRESHOLDS[1])
        k = f"{target:.3f}"
        cj, sj = t["jobs"]["cnn"], t["jobs"]["seed-cnn"]
        c, sd = cj["reached"].get(k), sj["reached"].get(k)
        goal = t.get("goal")
        result = f"cnn {_reach(c, cj)}, seed-cnn {_reach(sd, sj)}"
        if goal and goal["ratio"] is not None:
            result += f": seed-cnn / cnn **{'> ' if goal['lower_bound'] else ''}{goal['ratio']:.1f}x**"
        elif t["ratios_seed_over_cnn"].get(k):
            result += f": seed-cnn / cnn **{t['ratios_seed_over_cnn'][k]:.1f}x**"
        verdict = f">= {t.get('goal_ratio', TTA_GOAL_RATIO):g}x ({goal['status']})" if goal else "-"
        rival = (f"tutorials' seed-cnn (`--epochs {sj.get('epochs_requested', sj['epochs'])}`, cancelled on reaching "
                 f"{target * 100:.1f}%)" if "seed_target" in t else "tutorials' seed-cnn")
        rows.append(f"| time to {target * 100:.1f}% | {rival} | {result} | {verdict} |")
    ce = R.get("ceiling")
    if ce and "error" not in ce:
        sm = ce["summary"]
        rows.append(f"| accuracy ceiling | the goals | {ceiling_models(ce)}, {_n(ce['epochs'], 'epoch')} each: median "
                    f"**{sm['member_median'] * 100:.2f}%** ({sm['member_min'] * 100:.2f}-{sm['member_max'] * 100:.2f}%)"
                    + (f", `{' '.join(augment_flags(sm['single_goal_recipe']))}` ones "
                       f"**{sm['single_goal_median'] * 100:.2f}%**" if "single_goal_recipe" in sm else "") +
                    f"; their ensemble **{sm['ensemble_accuracy'] * 100:.2f}%** | single >= {SINGLE_GOAL * 100:.2f}% "
                    f"({'met' if sm['single_goal_met'] else 'NOT met'}), ensemble >= {ENSEMBLE_GOAL * 100:.2f}% "
                    f"({'met' if sm['ensemble_goal_met'] else 'NOT met'}) |")
    p = R.get("predict")
    if p and "error" not in p:
        g = p["goals"]
        rows.append(f"| prediction | bare Keras / per-image loop | (c)/(a) **{g['c_over_a']['value']:.2f}**, (c)/(b) "
                    f"**{g['c_over_b']['value']:.1f}** | >= {g['c_over_a']['goal']:g} "
                    f"({'met' if g['c_over_a']['met'] else 'NOT met'}), >= {g['c_over_b']['goal']:g} "
                    f"({'met' if g['c_over_b']['met'] else 'NOT met'}) |")
    q = R.get("queue")
    if q and "error" not in q:
        sd = q["sequential_default_poll"]
        rows.append(f"| queue latency | worker's own task time | p50 **{ms(sd['p50'])}**, p99 {ms(sd['p99'])} (worker "
                    f"{ms(q['sequential_fine_poll']['worker_p50'])}); {q['burst']['jobs_per_second']:.1f} tasks/s | - |")
    sc = R.get("scaling")
    if sc and "error" not in sc:
        rows.append(f"| scaling | 1 replica / 1 worker | 2 replicas **{fr(sc['replica_speedup_steady'])}** images/s; "
                    f"2 workers **{fr(sc['worker_speedup'])}** on 2 jobs | - |")
    k = R.get("onednn")
    if k and "error" not in k:
        rows.append(f"| CPU kernels on {k['cpu']} | TensorFlow's own choice "
                    f"(oneDNN {'on' if k['tf_default'] else 'off' if k['tf_default'] is False else 'unknown'}) | "
                    f"oneDNN on: training **{fr(k['train_speedup'])}** images/s, test evaluation "
                    f"**{fr(k['eval_speedup'])}** | - |")
    if not rows:
        return []
    return ["## Summary", "", "| benchmark | competitor | result (medians) | goal |", "| --- | --- | --- | --- |",
            *rows, ""]


def _reach(hit, job) -> str:
    if hit:
        return f"{hit['seconds']:.0f} s (epoch {hit['epoch']})"
    if job.get("stopped_at_target"):
        return f"- (stopped after epoch {job['epochs']})"
    return f"not reached in {job['epochs']} epochs"


def _section_overhead(suite: Suite, res: dict) -> list[str]:
    s = res["summary"]
    data_args = res.get("data_args", suite.args.data_args)
    sp, bp = s["service_parts"], s["bare_parts"]
    runs = res["runs"]
    pr = overhead_pairs(res)
    w = pr["wall"]
    met = w["median"] <= OVERHEAD_GOAL

    def spread(key):
        x = pr[key]
        return f"{x['median']:.3f} ({x['min']:.3f}-{x['max']:.3f})"

    L = [f"`digitq submit-train --wait --json --epochs 2{(' ' + ' '.join(data_args)) if data_args else ''}` on a",
         "warm embedded stack (started, and one tiny job run, just before), against `bench/bare_keras.py` in a fresh",
         "process: the same `build_model`/`compile_model`/`make_augmenter` and `make_tf_dataset`, the same split",
         f"({res['train_images']:,} training, {res['validation_images']:,} validation, {res['test_images']:,} test images),",
         f"global batch {res['global_batch']}, seed, one-cycle length and test evaluation, without tf.distribute, backups,",
         "TensorBoard, progress reports or the queue. The service's `wall_seconds` (worker: from the job's start to",
         "its result, including data loading and model build) is compared with the bare script's fit + test",
         f"evaluation + save. {len(runs)} pairs, run back to back, alternating which side goes first.", "",
         f"**Headline: the median of the per-pair ratios, {w['median']:.3f} (range {w['min']:.3f}-{w['max']:.3f} over "
         f"{len(w['values'])} pairs; goal <= {OVERHEAD_GOAL}: {'met' if met else 'NOT met'}).** On this shared 2-core VM two "
         "identical runs differ by up to 20%, more than the overhead being measured. The two runs of a pair run back "
         "to back and share the machine's state (other processes' load, CPU clock, caches), so a slow spell mostly "
         "slows both and cancels out of their ratio; the median over the pairs then keeps one disturbed pair from "
         "moving the result. The ratio of the medians compares runs from different pairs, so it carries the "
         "run-to-run noise; it is shown for comparison.", "",
         "| measurement | digitq (median) | bare Keras (median) | ratio of the medians | per-pair ratio: median (min-max) |",
         "| --- | ---: | ---: | ---: | ---: |",
         f"| **in-job wall time** (service `wall_seconds` vs bare fit+eval+save) | {fs(s['service_wall'])} | "
         f"{fs(s['bare_timed'])} | {s['ratio_wall']:.3f} | **{spread('wall')}** |",
         f"| epochs only (sum of per-epoch seconds, incl. validation) | {fs(s['service_train'])} | "
         f"{fs(s['bare_train'])} | {s['ratio_epochs']:.3f} | {spread('epochs')} |",
         f"| end to end (CLI submit to result and exit, vs the whole bare process) | {fs(s['service_client'])} | "
         f"{fs(s['bare_process'])} | {s['ratio_end_to_end']:.3f} | {spread('end_to_end')} |",
         f"| test accuracy | {s['service_accuracy'] * 100:.2f}% | {s['bare_accuracy'] * 100:.2f}% | | |", "",
         "Where the time goes (medians; the service's parts from the CLI's clock, the job's `submitted` time, the",
         "worker log's timestamps and the result JSON; the bare script's from its own timers):", "",
         "| part | digitq | bare Keras |", "| --- | ---: | ---: |",
         f"| start-up: CLI start until submitted / Python start + TensorFlow import + exit | {fs(sp['startup'], 2)} | "
         f"{fs(bp['startup'], 2)} |",
         f"| queue: submitted until the worker received it | {fs(sp['queue'], 2)} | - |",
         f"| data loading (service: lease, `load_dataset` from the worker's cache, devices) | {fs(sp['setup'], 2)} | "
         f"{fs(bp['setup'], 2)} |",
         f"| model build + compile + input pipeline + fit outside epochs | {fs(sp['fit_other'], 2)} | "
         f"{fs(bp['fit_other'], 2)} |",
         f"| epochs (`train_seconds`) | {fs(sp['epochs'], 2)} | {fs(bp['epochs'], 2)} |",
         f"| test evaluation + save | {fs(sp['eval_save'], 2)} | {fs(bp['eval_save'], 2)} |",
         f"| model registry + result.json + Celery result | {fs(sp['bookkeeping'], 2)} | - |",
         f"| client notices the result (polls every 0.25 s), prints, exits / JSON print | {fs(sp['tail'], 2)} | "
         f"{fs(bp['tail'], 2)} |",
         f"| **total** | {fs(s['service_client'], 2)} | {fs(s['bare_process'], 2)} |", "",
         f"Service `wall_seconds` minus `train_seconds`: {fs(s['service_wall'] - s['service_train'], 2)} (data, build, "
         f"evaluation, save); bare fit+eval+save minus its epochs: {fs(s['bare_timed'] - s['bare_train'], 2)}. "
         "Differences, digitq minus bare: " + ", ".join(
             f"{label} {sp[k] - bp[k]:+.2f} s" for k, label in (
                 ("epochs", "epochs"), ("fit_other", "build/compile/fit outside epochs"),
                 ("eval_save", "evaluation + save"), ("setup", "data loading"))
             if sp[k] is not None and bp[k] is not None) + ". The service runs its callbacks (backup every epoch, "
         "TensorBoard, progress, history) and feeds `fit` one endless dataset with `steps_per_epoch`, where the "
         "bare script makes Keras start a new iterator each epoch, so the two accuracies are not expected to match "
         "to the last digit. Runs before git f121a83 trained the service under a one-device MirroredStrategy, "
         "whose per-epoch iterator teardown stalled 8-28 s at random (the 1.16 of the first runs).", ""]
    if res["train_images"] < 55_000:
        L += [f"Note: only {res['train_images']:,} training images in this run, so the fixed costs (build, "
              "evaluation, save) weigh more in the ratio than they do on the full 55,000.", ""]
    L += ["Per pair (seconds; odd pairs ran digitq first, even pairs the bare script):", "",
         "| pair | digitq client | digitq wall_seconds | digitq epochs | bare process | bare fit+eval+save | bare epochs | "
         "wall ratio | epochs ratio | other processes' CPU share (digitq / bare run) |",
         "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for i, r in enumerate(runs):
        sv, b = r["service"], r["bare"]
        L.append(f"| {i + 1} | {sv['client_seconds']:.2f} | {sv['wall_seconds']:.2f} | {sv['train_seconds']:.2f} | "
                 f"{b['process_seconds']:.2f} | {b['timed_seconds']:.2f} | {b['train_seconds']:.2f} | "
                 f"{sv['wall_seconds'] / b['timed_seconds']:.3f} | {sv['train_seconds'] / b['train_seconds']:.3f} | "
                 f"{cpu_share(sv)} / {cpu_share(b)} |")
    c = s["cold"]
    L += ["", "**Cold start** (`digitq local down`, then `digitq local up` and a first tiny job: 1 epoch on 1,000",
          "images, 500 validation, 500 test), against the same tiny job on the then-warm stack:", "",
          "| | seconds (median) |", "| --- | ---: |",
          f"| `digitq local up` (starts redis-server, spawns the worker; returns without waiting for it) | "
          f"{fs(c['local_up_seconds'], 2)} |",
          f"| worker ready (Celery `ready.` in worker.log, from the start of `local up`: TensorFlow import, devices, "
          f"broker connect) | {fs(c['worker_ready_seconds'], 2)} |",
          f"| first tiny job, submit to result (cold worker: also MNIST load, first graph tracing) | "
          f"{fs(c['first_job_seconds'], 2)} |",
          f"| **cold total: `local up` + first tiny job** | **{fs(c['total_seconds'], 2)}** |",
          f"| the same tiny job on the warm stack | {fs(c['warm_job_seconds'], 2)} |",
          f"| cold-start cost (cold total minus warm job) | {fs(c['cost_seconds'], 2)} |", ""]
    return L


def _section_tta(suite: Suite, res: dict) -> list[str]:
    data_args = res.get("data_args", suite.args.data_args)
    j = res["jobs"]
    c, sd = j["cnn"], j["seed-cnn"]
    target = res.get("seed_target")
    asked = sd.get("epochs_requested", sd["epochs"])
    L = ["Two service jobs with `--track-test` (each epoch's history entry gets the MNIST test accuracy and",
         "`train_elapsed`, the training seconds so far, the test passes themselves not counted):",
         f"`--arch cnn --epochs {c.get('epochs_requested', c['epochs'])}` (digitq's default recipe, run to the end) "
         f"and `--arch seed-cnn --epochs {asked}` (the tutorials' CNN and recipe: Adam 1e-4, batch 50)"
         + (f", both with `{' '.join(data_args)}`" if data_args else "") + "."]
    if target is None:  # a suite.json from before the seed-cnn was stopped at a target
        L += ["", f"The seed-cnn ran {sd['epochs']} of the tutorials' {TUTORIAL_SEED_EPOCHS} epochs and ended at "
              f"**{sd['test_accuracy'] * 100:.2f}%**; the cnn ended at **{c['test_accuracy'] * 100:.2f}%** after "
              f"{c['epochs']} epochs.", ""]
    else:
        L += ["The seed-cnn job is submitted without `--wait`; the suite polls its `history.json` on the shared volume "
              f"and runs `digitq cancel` as soon as its tracked test accuracy first reaches {target * 100:.1f}%.", ""]
        hit = sd["reached"].get(f"{target:.3f}")
        if sd.get("stopped_at_target") and hit:
            seed_text = (f"**The seed-cnn reached {target * 100:.1f}% at epoch {hit['epoch']} of {asked}**, after "
                         f"{hit['seconds']:.0f} s of training, and was cancelled "
                         f"({sd.get('cancel_seconds') or 0:.1f} s from `digitq cancel` to the job's REVOKED state).")
        elif hit:
            seed_text = (f"**The seed-cnn reached {target * 100:.1f}% at epoch {hit['epoch']}** ({hit['seconds']:.0f} s "
                         f"of training) and ended on its own after {sd['epochs']} epochs at "
                         f"{sd['test_accuracy'] * 100:.2f}%.")
        elif asked >= TUTORIAL_SEED_EPOCHS:
            seed_text = (f"**The seed-cnn: {target * 100:.1f}% not reached in {sd['epochs']} epochs** "
                         f"({sd['train_seconds']:.0f} s of training); it ended at {sd['test_accuracy'] * 100:.2f}%.")
        else:
            seed_text = (f"**The seed-cnn: {target * 100:.1f}% not reached in {sd['epochs']} epochs**, capped below the "
                         f"tutorials' {TUTORIAL_SEED_EPOCHS} by `--seed-epochs {asked}`; it ended at "
                         f"{sd['test_accuracy'] * 100:.2f}%.")
        chit = c["reached"].get(f"{target:.3f}")
        cnn_text = (f"The cnn ended at **{c['test_accuracy'] * 100:.2f}%** after {c['epochs']} epochs"
                    + (f" and first reached {target * 100:.1f}% at epoch {chit['epoch']} ({chit['seconds']:.0f} s of "
                       "training)." if chit else f"; **it never reached {target * 100:.1f}%** in its {c['epochs']} epochs."))
        L += [f"{seed_text} {cnn_text}", ""]
        goal = res["goal"]
        if goal["status"] == "met":
            verdict = (f"**The order-of-magnitude goal at {target * 100:.1f}% is met**: {goal['why']} "
                       f"(goal: seed-cnn / cnn >= {res['goal_ratio']:g}).")
        elif goal["status"] == "NOT met":
            verdict = (f"**The order-of-magnitude goal at {target * 100:.1f}% is NOT met**: {goal['why']} "
                       f"(goal: seed-cnn / cnn >= {res['goal_ratio']:g}).")
        else:
            verdict = (f"**Whether the order-of-magnitude goal at {target * 100:.1f}% is met cannot be told from this "
                       f"run**: {goal['why']}; that bound is below the goal's {res['goal_ratio']:g}x.")
        L += [verdict, ""]
    L += ["| test accuracy reached | cnn: training seconds (epoch) | seed-cnn: training seconds (epoch) | "
          "seed-cnn / cnn |", "| --- | ---: | ---: | ---: |"]
    for thr in res["thresholds"]:
        k = f"{thr:.3f}"
        ratio = res["ratios_seed_over_cnn"][k]
        mark = "**" if target is not None and abs(thr - target) < 1e-9 else ""
        L.append(f"| {mark}{thr * 100:.1f}%{mark} | {_reach(c['reached'][k], c)} | {_reach(sd['reached'][k], sd)} | "
                 f"{f'{mark}{ratio:.1f}x{mark}' if ratio else '-'} |")
    L += ["", "| job | epochs | how it ended | training seconds | job wall_seconds | seconds per epoch | "
          "test accuracy at the end | model | other processes' CPU share |",
          "| --- | ---: | --- | ---: | ---: | ---: | ---: | --- | ---: |"]
    for arch in ("cnn", "seed-cnn"):
        x = j[arch]
        if x.get("stopped_at_target"):
            how = f"cancelled at {target * 100:.1f}%"
        else:
            how = "finished"
        acc = f"{x['test_accuracy'] * 100:.2f}%" + (" (tracked)" if x.get("stopped_at_target") else "")
        L.append(f"| {arch} | {x['epochs']} of {x.get('epochs_requested', x['epochs'])} | {how} | "
                 f"{x['train_seconds']:.1f} | {fs(x.get('wall_seconds'), 1, '')} | "
                 f"{x['train_seconds'] / x['epochs']:.1f} | {acc} | {x.get('model') or '- (cancelled: not registered)'} | "
                 f"{cpu_share(x)} |")
    L += ["", "Test accuracy after each epoch (training seconds so far):", "",
          "| epoch | cnn | seed-cnn |", "| ---: | --- | --- |"]
    n = max(len(c["curve"]), len(sd["curve"]))
    for i in range(n):
        cells = []
        for x in (c, sd):
            e = x["curve"][i] if i < len(x["curve"]) else None
            cells.append(f"{e['test_accuracy'] * 100:.2f}% ({e['train_elapsed']:.0f} s)" if e else "")
        L.append(f"| {i + 1} | {cells[0]} | {cells[1]} |")
    L.append("")
    return L


def _section_ceiling(suite: Suite, res: dict) -> list[str]:
    sm, ev, reg = res["summary"], res["evaluate"], res.get("registry") or {}
    k, e = res["k"], res["epochs"]
    jobs = ceiling_jobs(res)
    images = (" --validation-size 0" if res.get("train_images") == 60_000 else "")

    def command(job: dict) -> str:
        flags = " ".join(recipe_flags(job))
        reused = job.get("reused")
        if reused:
            seed = f" --seed {job['seed']}" if job.get("seed") else ""
            return (f"`digitq submit-train {flags} --ensemble {job['k']}{seed} --epochs {job['epochs']} --track-test{images}`, "
                    f"job {reused['job_id']}, finished {reused['finished']} and reused here with `--ceiling-job`")
        return f"`digitq submit-train {' '.join(job['argv'])} --wait --json`"

    if len(jobs) == 1:
        augment = jobs[0]["augment"]
        flags = " ".join(recipe_flags(jobs[0]))
        L = [f"One service job, {command(jobs[0])}: {k} models trained one after",
             f"another, each {cnn_words(jobs[0])} with {AUGMENT_WORDS[augment]}",
             f"for {e} epoch{'s' if e != 1 else ''}, seeds {0}..{k - 1}. Each member is a single `{flags}` model;",
             "the registered model averages their probabilities."]
    else:
        flags = None
        L = [f"{len(jobs)} service jobs, one after the other, each training its models one after another:", ""]
        L += [f"- {command(j)}: {j['k']} models, each {cnn_words(j)} with {AUGMENT_WORDS[j['augment']]}, "
              f"seeds {j.get('seed', 0)}..{j.get('seed', 0) + j['k'] - 1}; its own ensemble scored "
              f"{j['test_accuracy'] * 100:.2f}%" for j in jobs]
        L += ["", f"then `digitq {' '.join(res['combine_argv'])}` registered `{res['model']}`, which averages all "
              f"{k} networks' probabilities (each network weighs the same)."]
    L[-1] += (" Test accuracies are on the MNIST test set"
              + (f" (first {ev['images']:,} images)" if res.get("data_args") else f" ({ev['images']:,} images)") + ".")
    many = len(jobs) > 1
    recipe_head, recipe_rule, recipe_gap = ("recipe | ", "--- | ", " |") if many else ("", "", "")
    L += ["",
          f"| member | {recipe_head}seed | test accuracy | best epoch (its accuracy) | training seconds | "
          f">= {SINGLE_GOAL * 100:.2f}% |", f"| ---: | {recipe_rule}---: | ---: | --- | ---: | --- |"]
    for m in sm["members"]:
        best = f"{m['best_epoch']} ({m['best_accuracy'] * 100:.2f}%)" if m["best_epoch"] else "-"
        recipe = f"`{' '.join(recipe_flags(m))}` | " if many else ""
        L.append(f"| {m['member']} | {recipe}{m['seed']} | {m['test_accuracy'] * 100:.2f}% | {best} | "
                 f"{m['train_seconds']:.0f} | {'yes' if m['meets_single_goal'] else 'no'} |")
    L += [f"| **median** (min-max) |{recipe_gap} | **{sm['member_median'] * 100:.2f}%** ({sm['member_min'] * 100:.2f}-"
          f"{sm['member_max'] * 100:.2f}%) | | | {sm['members_meeting_single_goal']} of {k} |",
          f"| **ensemble** (averaged) |{recipe_gap} | **{sm['ensemble_accuracy'] * 100:.2f}%** | | "
          f"{res['train_seconds']:.0f} (all) | |",
          "",
          "| goal | measured | met |", "| --- | --- | --- |",
          f"| {single_goal_words(sm, k, flags)} | "
          f"{'met' if sm['single_goal_met'] else 'NOT met'} |",
          f"| ensemble >= {ENSEMBLE_GOAL * 100:.2f}% | {sm['ensemble_accuracy'] * 100:.2f}% | "
          f"{'met' if sm['ensemble_goal_met'] else 'NOT met'} |", "",
          f"Training: {res['train_seconds']:.0f} s ({res['train_seconds'] / 60:.1f} min) over the {k} members, "
          f"{res['train_seconds'] / max(1, k * e):.1f} s per member-epoch on {res['train_images']:,} images; "
          f"{'the jobs' if many else 'job'} wall_seconds {res['wall_seconds']:.0f} s (with the per-epoch test passes, evaluation and saving), "
          f"client {fs(res['client_seconds'], 0)}. Other processes' CPU share: {cpu_share(res)}.", ""]
    agree = ev["accuracy"] is not None and abs(ev["accuracy"] - res["test_accuracy"]) < 1e-6
    L += [f"**Through `digitq {' '.join(ev['argv'])}`:** accuracy **{ev['accuracy'] * 100:.2f}%** over "
          f"{ev['images']:,} images ({ev['seconds']:.1f} s, CLI start to exit), "
          + ("the combined model's accuracy (it has no training job of its own)" if many else
             "the same as the job's own result" if agree else
             f"against {res['test_accuracy'] * 100:.2f}% in the job's own result") +
          f". `{res['model']}` is a registered model like any other (`digitq models show`: kind "
          f"`{reg.get('kind')}`, {reg.get('members')} member files), and `evaluate` resolves and scores it without "
          "knowing it is an ensemble.", ""]
    for w in res.get("warnings") or []:
        L += [f"Worker warning: {w}", ""]
    return L


def _section_predict(suite: Suite, res: dict) -> list[str]:
    r, mdl = res["results"], res["model"]
    L = [f"`bench/predict_throughput.py` (run by the suite with `-n {res['n']}`; its own JSON is "
         "`bench/results/predict.json`): the same model and the same MNIST test digits, written as real "
         f"{res['png_size']}x{res['png_size']} PNG files (dark ink on white), through (a) bare Keras `model.predict` on the",
         "decoded arrays, (b) the tutorials' per-image loop (PIL, invert, `model.predict` per image) and (c)",
         "`digitq predict FOLDER` end to end on the warm embedded stack.", "",
         f"Model: `{mdl['model']}`, {res.get('how_model', '')}; its test accuracy at training: "
         f"{(mdl.get('test_accuracy') or float('nan')) * 100:.2f}%.", "",
         ]
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from predict_throughput import result_tables

    L += result_tables(res)
    L += ["", f"Accuracy of this model on the PNGs through `digitq predict`: **{r['c']['accuracy'] * 100:.2f}%**; on the "
          f"decoded test arrays (bare Keras): **{r['a']['accuracy'] * 100:.2f}%** (first {res['n']:,} test digits).", ""]
    p = res.get("profile")
    if p:
        L += ["Where (c)'s time goes (median run):", "", "| part | seconds | share of (c) wall |", "| --- | ---: | ---: |"]
        wall = r["c"]["median_seconds"]
        for label, sec in p["parts"]:
            share = f"{sec / wall * 100:.0f}%" if sec is not None and sec == sec and wall else "-"
            L.append(f"| {label} | {sec:.3f} | {share} |")
        L.append("")
    return L


def _section_queue(suite: Suite, res: dict) -> list[str]:
    sd, sf, b = res["sequential_default_poll"], res["sequential_fine_poll"], res["burst"]
    return [
        "Tiny tasks on the warm embedded worker, sent with the Python client API: `digitq.predict` on one image",
        f"(784 zero bytes) with model `{res['model']}`, `c.app.send_task(..., queue=\"predict\")` then",
        "`c.wait_result(id)`; 3 untimed warm-up tasks first. The competitor is the worker's own time per task",
        "(Celery's `succeeded in` in worker.log): what the queue round trip adds on top of it.", "",
        "| measurement | n | p50 | p99 | mean | max | worker's task time p50 | round trip minus task time (p50s) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        f"| one at a time, `wait_result` default polling (first look at once, then 50 ms growing x1.5) | {sd['n']} | "
        f"**{ms(sd['p50'])}** | **{ms(sd['p99'])}** | {ms(sd['mean'])} | {ms(sd['max'])} | {ms(sd['worker_p50'])} | "
        f"{ms(_sub(sd['p50'], sd['worker_p50']))} |",
        f"| one at a time, 2 ms polling (the queue's own latency) | {sf['n']} | {ms(sf['p50'])} | {ms(sf['p99'])} | "
        f"{ms(sf['mean'])} | {ms(sf['max'])} | {ms(sf['worker_p50'])} | {ms(_sub(sf['p50'], sf['worker_p50']))} |", "",
        f"**Throughput:** {b['n']} tasks sent at once ({ms(b['send_seconds'])} to send them all) and drained in "
        f"{fs(b['total_seconds'], 2)}: **{b['jobs_per_second']:.1f} tasks/s**; the worker was busy "
        f"{fs(b['worker_busy_seconds'], 2)} of that (its own bound: "
        f"{b['worker_bound_jobs_per_second'] or 0:.1f} tasks/s; one solo-pool worker runs one task at a time).",
        f"With n = {sd['n']}, p99 is close to the maximum.", ""]


def _section_scaling(suite: Suite, res: dict) -> list[str]:
    rep, wk = res["replicas"], res["workers"]
    cores = suite.machine["usable_cpus"]
    L = ["**Replicas.** `bench/bare_keras.py --strategy mirrored` (digitq's own device set-up and strategy: "
         "MirroredStrategy for 2 replicas; for 1, MirroredStrategy too in runs before git f121a83, TensorFlow's "
         "default strategy since)",
         f"in a fresh process with `DIGITQ_CPU_REPLICAS=1` and `=2`: 1 epoch of the default cnn on "
         f"{res['train_images']:,} images (no validation, {res['test_images']:,} test). Batch size is per replica, so 2",
         "replicas use twice the global batch (and half the steps), as the service does. Steady = the first epoch's",
         "batches after a short warm-up; whole epoch includes graph tracing.", "",
         "| DIGITQ_CPU_REPLICAS | global batch | images/s steady | images/s whole epoch | fit seconds | "
         "other processes' CPU share (median) |",
         "| ---: | ---: | ---: | ---: | ---: | ---: |"]
    for k in ("1", "2"):
        x = rep[k]
        L.append(f"| {k} | {x['global_batch']} | {x['steady_images_per_second'] or 0:,.0f} | "
                 f"{x['epoch_images_per_second'] or 0:,.0f} | {x['fit_seconds']:.1f} | {pct(x.get('other_share'))} |")
    L += [f"| **2 / 1** | | **{fr(res['replica_speedup_steady'])}** | {fr(res['replica_speedup_epoch'])} | | |", "",
          f"**Workers.** Two `digitq submit-train --json` clients started at once, each a job of 1 epoch on "
          f"{res['train_images']:,} images, with",
          "the embedded worker alone and with a second worker (`python -m digitq.worker --hostname w2@bench`",
          "against the embedded stack's broker; toggled between the two cases with Celery's",
          "`cancel_consumer`/`add_consumer` on the train queue, so the cases alternate within the run).", "",
          "| workers | both jobs done (s) | images/s, both jobs | a job's wall_seconds | a job's images/s | jobs spread | "
          "other processes' CPU share (median) |",
          "| ---: | ---: | ---: | ---: | ---: | --- | ---: |"]
    for k in ("1", "2"):
        x = wk[k]
        L.append(f"| {k} | {x['total_seconds']:.1f} | {x['images_per_second']:,.0f} | {x['job_wall_seconds']:.1f} | "
                 f"{x['job_images_per_second']:,.0f} | {'one per worker' if k == '2' and x['all_on_distinct_workers'] else ('one worker' if k == '1' else 'NOT always one per worker')} | "
                 f"{pct(x.get('other_share'))} |")
    L += [f"| **speed-up** | **{fr(res['worker_speedup'])}** | | | | | |", "",
          f"All of this runs on the same {cores} CPU cores: a second replica or worker process can only use the",
          "cycles one TensorFlow process leaves idle (single-threaded tracing, input pipeline stalls, evaluation),",
          "so these figures show how much of that there is, not what more machines would give.", ""]
    return L


def _section_onednn(suite: Suite, res: dict) -> list[str]:
    tf_default = {True: "on", False: "off"}.get(res["tf_default"], "not known")
    L = ["TensorFlow turns its oneDNN CPU kernels on by itself only on CPUs with AVX-512 VNNI/BF16 or AMX.",
         "digitq's worker turns them on for every x86-64 CPU (`TF_ENABLE_ONEDNN_OPTS=1` unless it is set; see",
         "`digitq.worker.devices.prefer_onednn`). The competitor is TensorFlow's own choice, which on this CPU "
         f"({res['cpu']}) is **{tf_default}**.", "",
         f"`bench/bare_keras.py --epochs 1 --train-size {res['train_images']} --validation-size 0 --steady` in a "
         "fresh process with `TF_ENABLE_ONEDNN_OPTS=0` and `=1`, alternating which goes first: 1 epoch of the",
         f"default cnn on {res['train_images']:,} images, then `model.evaluate` on the {res['test_images']:,} test "
         "images. Steady = the first epoch's batches after a short warm-up.", "",
         "| oneDNN | images/s training (steady) | images/s whole epoch | test evaluation (s) | images/s evaluation | "
         "test accuracy | other processes' CPU share (median) |",
         "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for v, label in (("0", "off"), ("1", "on")):
        x = res["sides"][v]
        L.append(f"| {label} | {x['steady_images_per_second'] or 0:,.0f} | {x['epoch_images_per_second'] or 0:,.0f} | "
                 f"{x['eval_seconds']:.2f} | {x['eval_images_per_second']:,.0f} | {x['test_accuracy'] * 100:.2f}% | "
                 f"{pct(x.get('other_share'))} |")
    L += [f"| **on / off** | **{fr(res['train_speedup'])}** | | | **{fr(res['eval_speedup'])}** | | |", "",
          "Per run (training images/s, steady): "
          + "; ".join(f"{'on' if v == '1' else 'off'} "
                      + ", ".join(f"{r['steady_images_per_second'] or 0:,.0f}" for r in res["sides"][v]["runs"])
                      for v in ("0", "1")) + ".", ""]
    return L


def render_only(args) -> int:
    """Plots and report again from a finished run's suite.json (e.g. after changing the report's layout)."""
    out = Path(args.out) if Path(args.out).is_absolute() else REPO / args.out
    doc = load_suite_json(out / "suite.json")
    if doc is None:
        raise SystemExit(f"no {out / 'suite.json'} to render: run the suite first")
    backfill_stamps(doc)
    saved = doc["args"]
    for k in ("quick", "repeats", "overhead_repeats", "selected", "data_args", "seed_epochs", "seed_target",
              "cnn_epochs", "ceiling_k", "ceiling_epochs", "queue_n", "predict_n", "scale_images"):
        if k in saved:  # a suite.json from an older suite lacks the newer ones: keep the defaults
            setattr(args, k, saved[k])
    suite = Suite.__new__(Suite)
    suite.args, suite.out, suite.machine = args, out, doc["machine"]
    suite.plots = Path(args.plots) if Path(args.plots).is_absolute() else REPO / args.plots
    suite.results, suite.timings = doc["results"], doc["timings"]
    suite.started = time.time() - doc["suite_seconds"]
    suite.rendered_seconds = doc["suite_seconds"]  # re-rendering must not add its own seconds to the run's time
    suite.write_plots()
    suite.write_report()
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.render_only:
        return render_only(args)
    suite = Suite(args)
    suite.log(f"DIGITQ_HOME {suite.home}, DIGITQ_DATA_DIR {suite.data_dir}, results in {suite.out}, "
              f"{'QUICK smoke run, ' if args.quick else ''}repeats {args.repeats} (overhead {args.overhead_repeats}), "
              f"benchmarks {','.join(args.selected)}")
    for name, res in suite.results.items():
        st = res.get("stamp") or {}
        suite.log(f"keeping {name} from {suite.out / 'suite.json'} (ran {st.get('ran_at')}, git {st.get('git')}"
                  f"{', a --quick run' if st.get('quick') else ''})")
    if any((r.get("stamp") or {}).get("quick") != args.quick for r in suite.results.values()):
        suite.log("WARNING: mixing --quick and full results in one report; each section says which it is")
    try:
        return suite.run()
    except KeyboardInterrupt:
        suite.log("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
