"""A sweep's report (`digitq report SWEEP`): its trials' validation curves, accuracy against each
searched option, and a Markdown table, drawn headless on a worker from the sweep's Redis records.

Files (in `<home>/sweeps/<id>/report/` for the task):

    curves.png    validation accuracy per epoch, one line per trial: pruned trials dashed and ending
                  in an x (the epoch they were stopped at), the best trial thick
    params.png    one panel per searched option: each trial's last validation accuracy against its
                  value (log scale for log distributions; choices side by side)
    summary.md    the sweep (space, pruner, state, best model) and one table row per trial
"""

from __future__ import annotations

import base64
import math
from pathlib import Path

from digitq.common.errors import DigitqError, NoSuchJob
from digitq.common.schemas import ReportResult
from digitq.common.settings import Settings
from digitq.common.sweep import SWEEP_ID_RE, load_record, load_trials, short_params, sweep_key
from digitq.worker.report import DPI, _figure, _save, _temp_name

CURVES_SIZE = (1000, 520)
PANEL_SIZE = (380, 330)
"""Pixels per option panel of params.png (up to three panels a row)."""

STATE_COLOURS = {"complete": "#1f77b4", "pruned": "#ff7f0e", "failed": "#d62728", "cancelled": "#7f7f7f",
                 "running": "#2ca02c", "queued": "#bbbbbb"}
BEST_COLOUR = "#2ca02c"

REPORT_FILES = ("curves.png", "params.png", "summary.md")


def is_sweep(r, target: str) -> bool:
    return bool(SWEEP_ID_RE.fullmatch(target or "")) and bool(r.exists(sweep_key(target)))


def _load(r, sweep_id: str) -> tuple[dict, list]:
    rec = load_record(r, sweep_id)
    if rec is None:
        raise NoSuchJob(f"no sweep {sweep_id} (it never existed, or its record expired)")
    return rec, [t for _, t in sorted(load_trials(r, sweep_id).items())]


def plot_curves(rec: dict, trials: list, path: Path) -> Path:
    fig = _figure(CURVES_SIZE, layout="constrained")
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator, PercentFormatter

    ax = fig.subplots()
    best = (rec.get("best") or {}).get("slot")
    most = 1
    for t in trials:
        curve = [v for v in (t.get("curve") or []) if isinstance(v, (int, float))]
        if not curve:
            continue
        xs = list(range(1, len(curve) + 1))
        most = max(most, len(curve))
        state = t.get("state", "running")
        is_best = t.get("slot") == best
        ax.plot(xs, [v * 100 for v in curve], "--" if state == "pruned" else "-",
                color=BEST_COLOUR if is_best else STATE_COLOURS.get(state, "#333333"),
                linewidth=3 if is_best else 1.3, alpha=1.0 if is_best else 0.75, marker="o", markersize=3)
        if state == "pruned":
            ax.plot(xs[-1], curve[-1] * 100, "x", color=STATE_COLOURS["pruned"], markersize=9, markeredgewidth=2)
        ax.annotate(str(t.get("slot")), (xs[-1], curve[-1] * 100), textcoords="offset points", xytext=(4, 0),
                    fontsize=7, color="#444444", va="center")
    req = rec.get("request") or {}
    ax.set_title(f"Sweep {rec.get('sweep_id', '')}: validation accuracy per epoch, {len(trials)} trials, "
                 f"pruner {req.get('pruner')} ({rec.get('state')})", fontsize=11)
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation accuracy")
    ax.yaxis.set_major_formatter(PercentFormatter(decimals=None))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlim(0.7, most + 0.6)
    ax.grid(True, alpha=0.3)
    handles = [Line2D([], [], color=STATE_COLOURS["complete"], label="complete"),
               Line2D([], [], color=STATE_COLOURS["pruned"], linestyle="--", marker="x", label="pruned (x: stopped)"),
               Line2D([], [], color=BEST_COLOUR, linewidth=3, label="best")]
    if any(t.get("state") in ("failed", "cancelled") for t in trials):
        handles.append(Line2D([], [], color=STATE_COLOURS["cancelled"], label="failed / cancelled"))
    if ax.has_data():
        ax.legend(handles=handles, fontsize=9, loc="lower right")
    else:
        ax.text(0.5, 0.5, "no trial has finished an epoch yet", transform=ax.transAxes, ha="center", color="grey")
    return _save(fig, path)


def plot_params(rec: dict, trials: list, path: Path) -> Path:
    """Each trial's last validation accuracy against each searched option."""
    from matplotlib.ticker import PercentFormatter

    space = (rec.get("request") or {}).get("space") or {}
    names = list(space) or ["(nothing searched)"]
    cols = min(3, len(names))
    rows = math.ceil(len(names) / cols)
    fig = _figure((PANEL_SIZE[0] * cols, PANEL_SIZE[1] * rows + 40), layout="constrained")
    fig.suptitle(f"Sweep {rec.get('sweep_id', '')}: last validation accuracy against each searched option "
                 "(o complete, x pruned)", fontsize=11)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    best = (rec.get("best") or {}).get("slot")
    for ax, name in zip(axes, names):
        dist = space.get(name) or {}
        choice = dist.get("type") == "choice"
        labels = ["-".join(map(str, c)) if isinstance(c, list) else str(c) for c in dist.get("choices", [])]
        for t in trials:
            value, acc = (t.get("params") or {}).get(name), t.get("val_accuracy")
            if value is None or not isinstance(acc, (int, float)):
                continue
            x = labels.index("-".join(map(str, value)) if isinstance(value, list) else str(value)) if choice else value
            state = t.get("state")
            ax.scatter([x], [acc * 100], marker="x" if state == "pruned" else "o", s=60 if t.get("slot") == best else 28,
                       color=BEST_COLOUR if t.get("slot") == best else STATE_COLOURS.get(state, "#333333"), zorder=3)
        if choice:
            ax.set_xticks(range(len(labels)))
            ax.set_xticklabels(labels, fontsize=8)
            ax.set_xlim(-0.5, len(labels) - 0.5)
        elif dist.get("type", "").startswith("log"):
            ax.set_xscale("log")
        ax.set_title(name, fontsize=10)
        ax.set_ylabel("val accuracy")
        ax.yaxis.set_major_formatter(PercentFormatter(decimals=None))
        ax.grid(True, alpha=0.3)
    for ax in axes[len(names):]:
        ax.set_visible(False)
    return _save(fig, path)


def write_summary(rec: dict, trials: list, path: Path) -> Path:
    req = rec.get("request") or {}
    best = rec.get("best") or {}
    space = "; ".join(f"{k} {_dist_text(d)}" for k, d in (req.get("space") or {}).items())
    total_s = sum(t.get("seconds") or 0 for t in trials)
    lines = [f"# Sweep report: {rec.get('sweep_id')}", "", "| | |", "| --- | --- |",
             f"| state | {rec.get('state')} |",
             f"| trials | {req.get('trials')} ({req.get('parallel')} at once), pruner {req.get('pruner')}, "
             f"sampler {req.get('sampler')} |",
             f"| searched | {space} |",
             f"| best | trial {best.get('slot', '-')}: {short_params(best.get('params') or {})}, val accuracy "
             f"{_pct(best.get('value'))}, test accuracy {_pct(best.get('test_accuracy'))} |",
             f"| model | {rec.get('model') or '-'} |",
             f"| training time | {total_s:.1f} s over all trials |",
             "", "## Trials", "",
             "| # | state | epochs | val accuracy | test accuracy | seconds | params |",
             "| ---: | --- | ---: | ---: | ---: | ---: | --- |"]
    for t in trials:
        state = t.get("state", "queued") + (f" at epoch {t['pruned_at']}" if t.get("pruned_at") else "")
        lines.append(f"| {t.get('slot')} | {state} | {t.get('epoch') or 0}/{t.get('epochs') or '?'} | "
                     f"{_pct(t.get('val_accuracy'))} | {_pct(t.get('test_accuracy'))} | "
                     f"{(t.get('seconds') or 0):.1f} | {short_params(t.get('params') or {})} |")
    lines += ["", "## Plots", "", "![Validation curves](curves.png)", "", "![Accuracy against each option](params.png)", ""]
    tmp = _temp_name(path)
    try:
        tmp.write_text("\n".join(lines))
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _pct(v) -> str:
    return f"{v * 100:.2f}%" if isinstance(v, (int, float)) and v == v else "-"


def _dist_text(d: dict) -> str:
    if d.get("type") == "choice":
        return "in {" + ", ".join("-".join(map(str, c)) if isinstance(c, list) else str(c) for c in d["choices"]) + "}"
    return f"{d.get('type')} {d.get('low')}..{d.get('high')}"


def render_sweep_report(r, sweep_id: str, out_dir) -> list[Path]:
    rec, trials = _load(r, sweep_id)
    rec["sweep_id"] = sweep_id
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return [plot_curves(rec, trials, out / "curves.png"), plot_params(rec, trials, out / "params.png"),
            write_summary(rec, trials, out / "summary.md")]


def run_sweep_report(sweep_id: str, settings: Settings, r) -> dict:
    """The `digitq.report` task for a sweep: files in `<home>/sweeps/<id>/report/`, sent back base64."""
    folder = settings.home / "sweeps" / sweep_id / "report"
    paths = render_sweep_report(r, sweep_id, folder)
    try:
        files = {p.name: base64.b64encode(p.read_bytes()).decode() for p in paths}
    except OSError as exc:
        raise DigitqError(f"cannot read the report back from {folder}: {exc}") from None
    rec = load_record(r, sweep_id) or {}
    return ReportResult(job_id=sweep_id, model=rec.get("model"), folder=str(folder), files=files).to_dict()


__all__ = ["DPI", "REPORT_FILES", "is_sweep", "render_sweep_report", "run_sweep_report"]
