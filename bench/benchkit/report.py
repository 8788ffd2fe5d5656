"""BENCHMARKS.md: the introduction, the machine, the summary table, then each section's stamp, text and plot."""

from __future__ import annotations

from pathlib import Path

from benchkit.config import BUSY_WARN
from benchkit.section import Context
from benchkit.sections import BENCHMARKS, REPORT_ORDER, SECTIONS
from benchkit.stamps import cpu_label, format_stamp
from benchkit.text import pct, rel


SMOKE_BANNER_TAIL = [
    "> training images, 1 repeat (2 overhead pairs), 2 epochs for time-to-accuracy, a 2-model 1-epoch",
    "> ensemble, 1,000 PNGs, 10 queue tasks, on a machine shared with other work. They only show that the",
    "> suite runs end to end. Rerun the full suite (below) on a quiet machine before quoting anything.", ""]
"""The banner a report with --quick results starts with, after its first line (which names the sections)."""

INTRO = ["# digitq benchmarks", "",
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
         "and the logs next to it are not); plots: `bench/plots/`.", ""]
"""The report's fixed introduction: what the suite does, how to rerun it, what it needs."""


GPU_NOTES = Path(__file__).resolve().parent.parent / "gpu_check.md"
"""Hand-written, appended as the report's last section: the GPU check (bench/gpu_check.sh, run on a
GPU machine, not by the suite) and the JAX-worker decision."""

NUMBERS_NOTES = Path(__file__).resolve().parent.parent / "written_numbers.md"
"""Hand-written, appended after GPU_NOTES: bench/written_numbers.py's figures (`predict --number`
and the flag's trade-off), a standalone benchmark the suite does not run."""


ENSEMBLE_NOTES = Path(__file__).resolve().parent.parent / "ensemble_scaling.md"
"""Written by bench/ensemble_scaling.py (not a suite section: it runs its own redis-server and pinned
workers), appended before the GPU notes."""


TRAINING_NOTES = (Path(__file__).resolve().parent.parent / "time_to_accuracy.md",
                  Path(__file__).resolve().parent.parent / "training_speed.md",
                  Path(__file__).resolve().parent.parent / "prediction_speed.md")
"""bench/time_to_accuracy.py's section (written by it) and the hand-written notes on what was tried
for the default recipe's speed and for prediction's, appended first."""


def render_report(run, base: Path) -> str:
    """BENCHMARKS.md from a run (args, machine, results, timings, plot_files, elapsed()); plot links relative
    to base, the report's folder."""
    R = run.results
    L = []
    smoke = [b for b in BENCHMARKS if b in R and (R[b].get("stamp") or {}).get("quick")]
    if smoke:
        which = "" if len(smoke) == len(R) else f" (sections: {', '.join(smoke)})"
        L += [f"> **SMOKE RUN — NOT REAL FIGURES{which}.** These numbers come from `bench/suite.py --quick`: 5,000",
              *SMOKE_BANNER_TAIL]
    L += INTRO + _machine(run) + _summary(R)
    for number, name in enumerate(REPORT_ORDER, 1):
        L += _section(run, number, SECTIONS[name], base)
    for notes in (*TRAINING_NOTES, ENSEMBLE_NOTES, GPU_NOTES, NUMBERS_NOTES):
        if notes.is_file():
            L += notes.read_text().rstrip("\n").splitlines() + [""]
    return "\n".join(L).rstrip() + "\n"


def _machine(run) -> list[str]:
    """The machine table, with what this run reran and kept, and the warning when the machine was busy."""
    a, m, R = run.args, run.machine, run.results
    rerun = [b for b in a.selected if b in R]
    kept = [b for b in BENCHMARKS if b in R and b not in rerun]
    this_run = {k: v for k, v in run.timings.items() if k in rerun}
    total_min = run.elapsed() / 60
    per_bench = ", ".join(f"{k} {v['seconds'] / 60:.1f}" for k, v in this_run.items())
    timings = [(b, run.timings[b]) for b in BENCHMARKS if b in run.timings]
    noise = ", ".join(f"{k} {pct(v.get('other_share'))}" for k, v in timings)
    noisy = [k for k, v in timings if (v.get("other_share") or 0) > BUSY_WARN]
    L = ["## Machine", "",
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
    return L


def _section(run, number: int, section, base: Path) -> list[str]:
    """A section's title, stamp, then its text and plot, or why there are none."""
    res = run.results.get(section.name)
    L = [f"## {number}. {section.title}", ""]
    if res is None:
        return L + [f"Not run yet (`bench/suite.py --only {section.name}`).", ""]
    L += [format_stamp(res.get("stamp"), run.timings.get(section.name)), ""]
    if "error" in res:
        return L + ["**FAILED:**", "", "```", res["error"][-2000:], "```", ""]
    L += section.render(res, Context(args=run.args, machine=run.machine))
    plot = run.plot_files.get(section.name)
    if plot:
        L += [f"![{section.name}]({rel(plot, base)})", ""]
    return L


def _onednn_words(m: dict) -> str:
    if m.get("tf_default_onednn") is None:
        return ""
    return (f"; TensorFlow's oneDNN kernels: {'on' if m['tf_default_onednn'] else 'off'} by TensorFlow's own "
            "default, on in digitq's worker")


def _summary(results: dict) -> list[str]:
    """The summary table: each section's rows, in report order; sections that failed or never ran have none."""
    rows = []
    for name in REPORT_ORDER:
        res = results.get(name)
        if res and "error" not in res:
            rows += SECTIONS[name].summary(res)
    if not rows:
        return []
    return ["## Summary", "", "| benchmark | competitor | result (medians) | goal |", "| --- | --- | --- | --- |",
            *rows, ""]
