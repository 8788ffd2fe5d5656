"""Time to accuracy: the default cnn against the tutorials' seed-cnn, both with --track-test; the seed-cnn
is cancelled as soon as its tracked test accuracy reaches --seed-target."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from benchkit.config import THRESHOLDS, TTA_GOAL_RATIO, TUTORIAL_SEED_EPOCHS
from benchkit.harness import Harness
from benchkit.plotting import save, title
from benchkit.section import Context, Result, Section
from benchkit.stats import reached_thresholds, tta_curve, tta_goal
from benchkit.text import cpu_share, fs


@dataclass
class TtaResult(Result):
    jobs: dict
    """{"cnn": job record, "seed-cnn": job record}: epochs, how each ended, curve, thresholds reached."""
    ratios_seed_over_cnn: dict
    """{"0.994": seed-cnn / cnn training seconds to that accuracy, or None}."""
    thresholds: list
    data_args: list
    tutorial_seed_epochs: int
    seed_target: float
    goal_ratio: float
    goal: dict
    """stats.tta_goal's verdict."""


def run(h: Harness) -> TtaResult:
    """The cnn run to its end, then the seed-cnn cancelled once it reaches --seed-target."""
    a = h.args
    h.ensure_warm()
    thresholds = sorted(set(THRESHOLDS) | {a.seed_target})
    jobs = {}
    h.log(f"cnn: {a.cnn_epochs} epoch(s) with --track-test")
    res = h.service_train(["--arch", "cnn", "--epochs", str(a.cnn_epochs), "--track-test", *a.data_args,
                           "--name", "bench-tta-cnn"])
    hist = res["history"] or []
    jobs["cnn"] = {"epochs": len(hist), "epochs_requested": a.cnn_epochs, "job_id": res["job_id"],
                   "state": "SUCCESS", "stopped_at_target": False, "model": res["model"],
                   "test_accuracy": res["test_accuracy"], "wall_seconds": res["wall_seconds"],
                   "client_seconds": res["client_seconds"], "train_seconds": res["train_seconds"],
                   "train_images": res["train_images"], "curve": tta_curve(hist),
                   "reached": reached_thresholds(hist, thresholds), "cpu": res["cpu"]}
    h.models["tta-cnn"] = res["model"]
    h.log(f"cnn: test accuracy {res['test_accuracy']:.4f} after {res['train_seconds']:.0f} s of training")

    h.log(f"seed-cnn: up to {a.seed_epochs} epoch(s) with --track-test, stopped at {a.seed_target * 100:.2f}%")
    r = h.service_train_to_target(["--arch", "seed-cnn", "--epochs", str(a.seed_epochs), "--track-test",
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
        h.models["tta-seed-cnn"] = result["model"]
    ratios = {}
    for thr in thresholds:
        k = f"{thr:.3f}"
        c, sd = jobs["cnn"]["reached"][k], jobs["seed-cnn"]["reached"][k]
        ratios[k] = sd["seconds"] / c["seconds"] if c and sd else None
    goal = tta_goal(jobs["cnn"], jobs["seed-cnn"], a.seed_target)
    h.log(f"time to {a.seed_target * 100:.1f}%: goal >= {TTA_GOAL_RATIO:g}x {goal['status']}: {goal['why']}")
    return TtaResult(jobs=jobs, ratios_seed_over_cnn=ratios, thresholds=thresholds, data_args=a.data_args,
                     tutorial_seed_epochs=TUTORIAL_SEED_EPOCHS, seed_target=a.seed_target, goal_ratio=TTA_GOAL_RATIO,
                     goal=goal)


def render(res: dict, ctx: Context) -> list[str]:
    data_args = res.get("data_args", ctx.args.data_args)
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
        L.append(f"| {mark}{thr * 100:.1f}%{mark} | {reach_words(c['reached'][k], c)} | {reach_words(sd['reached'][k], sd)} | "
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



def plot(res: dict, path: Path, ctx: Context) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.8))
    accs = []
    for arch, style in (("cnn", "o-"), ("seed-cnn", "s-")):
        j = res["jobs"][arch]
        xs = [e["train_elapsed"] for e in j["curve"]]
        ys = [e["test_accuracy"] * 100 for e in j["curve"]]
        accs += ys
        ax.plot(xs, ys, style, label=_curve_label(arch, j, res))
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
    title(ax, head, ctx.quick)
    save(fig, path)


def _curve_label(arch: str, j: dict, res: dict) -> str:
    if arch == "cnn":
        return f"cnn (digitq default), {j['epochs']} epochs"
    target = res.get("seed_target")
    if j.get("stopped_at_target"):
        return f"seed-cnn (tutorials), stopped at {target * 100:.1f}% after {j['epochs']} of {j['epochs_requested']} epochs"
    if j["epochs"] < TUTORIAL_SEED_EPOCHS:
        return f"seed-cnn (tutorials), {j['epochs']} of {TUTORIAL_SEED_EPOCHS} epochs (capped)"
    return f"seed-cnn (tutorials), {j['epochs']} epochs" + (f", {target * 100:.1f}% not reached" if target else "")



def reach_words(hit, job) -> str:
    """When a job reached an accuracy, for a table cell."""
    if hit:
        return f"{hit['seconds']:.0f} s (epoch {hit['epoch']})"
    if job.get("stopped_at_target"):
        return f"- (stopped after epoch {job['epochs']})"
    return f"not reached in {job['epochs']} epochs"



def summary_rows(res: dict) -> list[str]:
    t = res
    target = t.get("seed_target", THRESHOLDS[1])
    k = f"{target:.3f}"
    cj, sj = t["jobs"]["cnn"], t["jobs"]["seed-cnn"]
    c, sd = cj["reached"].get(k), sj["reached"].get(k)
    goal = t.get("goal")
    result = f"cnn {reach_words(c, cj)}, seed-cnn {reach_words(sd, sj)}"
    if goal and goal["ratio"] is not None:
        result += f": seed-cnn / cnn **{'> ' if goal['lower_bound'] else ''}{goal['ratio']:.1f}x**"
    elif t["ratios_seed_over_cnn"].get(k):
        result += f": seed-cnn / cnn **{t['ratios_seed_over_cnn'][k]:.1f}x**"
    verdict = f">= {t.get('goal_ratio', TTA_GOAL_RATIO):g}x ({goal['status']})" if goal else "-"
    rival = (f"tutorials' seed-cnn (`--epochs {sj.get('epochs_requested', sj['epochs'])}`, cancelled on reaching "
             f"{target * 100:.1f}%)" if "seed_target" in t else "tutorials' seed-cnn")
    return [f"| time to {target * 100:.1f}% | {rival} | {result} | {verdict} |"]


SECTION = Section(
    name="tta",
    title="Time to accuracy: default cnn vs the tutorials' seed-cnn",
    result=TtaResult,
    run=run,
    render=render,
    plot=plot,
    summary=summary_rows,
)
