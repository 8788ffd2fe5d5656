"""A run of the suite: the selected sections one after another on one harness, each result stamped and
saved to suite.json as soon as it is in; then the plots and the report. Or, with --render-only, only the
plots and the report again from a finished run's suite.json."""

from __future__ import annotations

import os
import shutil
import time
import traceback
from dataclasses import replace
from pathlib import Path

from benchkit.config import REPO
from benchkit.harness import Harness, log
from benchkit.plotting import have_matplotlib
from benchkit.report import render_report
from benchkit.section import Context
from benchkit.sections import BENCHMARKS, SECTIONS
from benchkit.stamps import make_stamp
from benchkit.store import backfill_stamps, kept_results, load_suite_json, write_suite_json

RENDER_ARGS = ("quick", "repeats", "overhead_repeats", "selected", "data_args", "seed_epochs", "seed_target",
               "cnn_epochs", "ceiling_k", "ceiling_epochs", "queue_n", "predict_n", "scale_images")
"""The options a --render-only takes from the recorded run's suite.json rather than from its own command line."""


def _under_repo(path: str) -> Path:
    return Path(path) if Path(path).is_absolute() else REPO / path


class Run:
    """The results of a run (and those kept from earlier ones), their timings, the machine; what is written."""

    def __init__(self, args, machine: dict, results: dict, timings: dict, started: float,
                 recorded_seconds: float | None = None):
        self.args = args
        self.out = _under_repo(args.out)
        self.plots = _under_repo(args.plots)
        self.machine = machine
        self.results = results
        self.timings = timings
        self.started = started
        self.recorded_seconds = recorded_seconds
        """Re-rendering: the recorded run's length, which re-rendering must not add its own seconds to."""
        self.plot_files: dict = {}

    def elapsed(self) -> float:
        """Seconds of the run so far (or, re-rendering, of the recorded run)."""
        return self.recorded_seconds if self.recorded_seconds is not None else time.time() - self.started

    def write_json(self) -> None:
        doc = {"quick": self.args.quick, "args": dict(vars(self.args)), "machine": self.machine,
               "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(self.started)),
               "suite_seconds": round(self.elapsed(), 1), "timings": self.timings, "results": self.results}
        write_suite_json(self.out / "suite.json", doc)

    def write_plots(self) -> None:
        """Every section's plot, kept results' too (redrawn from suite.json), copied next to suite.json."""
        self.plot_files = {}
        if not have_matplotlib():
            log("matplotlib is not installed: no plots (pip install matplotlib)")
            return
        self.plots.mkdir(parents=True, exist_ok=True)
        ctx = Context(args=self.args, machine=self.machine)
        for name, section in SECTIONS.items():
            res = self.results.get(name)
            if not res or "error" in res:
                continue
            quick = bool((res.get("stamp") or {}).get("quick", self.args.quick))
            try:
                path = self.plots / f"{name}.png"
                section.plot(res, path, replace(ctx, quick=quick))
                shutil.copy(path, self.out / path.name)
                self.plot_files[name] = path
            except Exception as exc:
                log(f"plot {name} failed: {exc}")
                traceback.print_exc()

    def write_report(self) -> None:
        report = _under_repo(self.args.report)
        report.write_text(render_report(self, report.parent))
        log(f"wrote {report}, {self.out / 'suite.json'}, plots in {self.plots}")


def run_sections(run: Run, h: Harness) -> int:
    """The selected sections, in run order; one that fails is recorded as failed and the others go on.
    Returns the number that failed."""
    failed = 0
    for name in run.args.selected:
        section = SECTIONS[name]
        h.log(f"=== {name} ===")
        t = time.perf_counter()
        load = os.getloadavg()[0]
        stamp = make_stamp(run.args.quick, section.repeats(run.args), run.machine)
        meter = h.meter()
        try:
            run.results[name] = section.run(h).to_dict()
        except Exception as exc:  # one broken benchmark must not lose the others
            failed += 1
            h.log(f"{name} FAILED: {exc}")
            run.results[name] = {"error": f"{type(exc).__name__}: {exc}"[:3000],
                                 "traceback": traceback.format_exc()[-5000:]}
        run.results[name]["stamp"] = stamp
        cpu = meter.stop()
        run.timings[name] = {"seconds": round(time.perf_counter() - t, 1), "load_average_start": load,
                             "load_average_end": os.getloadavg()[0], "other_share": cpu["other_share"],
                             "other_cpu_seconds": cpu["other_cpu_seconds"]}
        h.log(f"{name} took {run.timings[name]['seconds']:.0f} s; other processes used "
              f"{cpu['other_share'] * 100:.0f}% of the CPUs meanwhile")
        run.write_json()
    return failed


def run_suite(args) -> int:
    """Runs the selected sections (keeping the others' results from suite.json with --only), then writes
    suite.json, the plots and the report. Exit status 1 if any section failed, 130 if interrupted."""
    out = _under_repo(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results, timings = {}, {}
    if args.only:  # a partial rerun: the other benchmarks' results stay in suite.json and the report
        results, timings = kept_results(load_suite_json(out / "suite.json"), args.selected, BENCHMARKS)
    h = Harness(args, out)
    run = Run(args, h.machine, results, timings, started=time.time())
    h.log(f"DIGITQ_HOME {h.home}, DIGITQ_DATA_DIR {h.data_dir}, results in {out}, "
          f"{'QUICK smoke run, ' if args.quick else ''}repeats {args.repeats} (overhead {args.overhead_repeats}), "
          f"benchmarks {','.join(args.selected)}")
    for name, res in results.items():
        st = res.get("stamp") or {}
        h.log(f"keeping {name} from {out / 'suite.json'} (ran {st.get('ran_at')}, git {st.get('git')}"
              f"{', a --quick run' if st.get('quick') else ''})")
    if any((r.get("stamp") or {}).get("quick") != args.quick for r in results.values()):
        h.log("WARNING: mixing --quick and full results in one report; each section says which it is")
    try:
        return _run_and_write(run, h)
    except KeyboardInterrupt:
        h.log("interrupted")
        return 130


def _run_and_write(run: Run, h: Harness) -> int:
    try:
        failed = run_sections(run, h)
    finally:
        h.close()
    run.machine["load_average_end"] = list(os.getloadavg())
    run.write_json()
    run.write_plots()
    run.write_report()
    return 1 if failed else 0


def load_run(args) -> Run:
    """A finished run as its <out>/suite.json recorded it, with the recorded run's options (RENDER_ARGS)."""
    out = _under_repo(args.out)
    doc = load_suite_json(out / "suite.json")
    if doc is None:
        raise SystemExit(f"no {out / 'suite.json'} to render: run the suite first")
    backfill_stamps(doc)
    saved = doc["args"]
    for k in RENDER_ARGS:
        if k in saved:  # a suite.json from an older suite lacks the newer ones: keep the defaults
            setattr(args, k, saved[k])
    return Run(args, doc["machine"], doc["results"], doc["timings"], started=time.time() - doc["suite_seconds"],
               recorded_seconds=doc["suite_seconds"])


def render_only(args) -> int:
    """Plots and report again from a finished run's suite.json (e.g. after changing the report's layout)."""
    run = load_run(args)
    run.write_plots()
    run.write_report()
    return 0
