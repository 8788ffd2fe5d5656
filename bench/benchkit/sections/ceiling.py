"""Accuracy ceiling: ensembles of augmented models (--augment, --elastic), each member's and the ensemble's
test accuracy against the goals, then `digitq evaluate` on the registered (combined) model."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from benchkit.config import ENSEMBLE_GOAL, SINGLE_GOAL
from benchkit.harness import Harness
from benchkit.plotting import save, title
from benchkit.recipes import AUGMENT_WORDS, arg_value, augment_flags, cnn_words, model_flags, recipe_flags
from benchkit.section import Context, Result, Section
from benchkit.stats import ceiling_summary, combined_ceiling_summary, merged_history
from benchkit.store import last_json
from benchkit.text import cpu_share, fs, plural


@dataclass
class CeilingResult(Result):
    k: int
    """Members over all jobs."""
    epochs: int
    augment: str
    argv: list | None
    data_args: list
    job_id: str
    reused: dict | None
    jobs: list
    """One record per ensemble job: its recipe, seeds, model and accuracy."""
    combine_argv: list | None
    model: str
    test_accuracy: float
    member_accuracies: list
    train_seconds: float
    wall_seconds: float
    client_seconds: float | None
    train_images: int
    history: list
    warnings: list
    cpu: dict | None
    summary: dict
    """stats.combined_ceiling_summary: the members, their spread and the goals."""
    evaluate: dict
    registry: dict


def run(h: Harness) -> CeilingResult:
    """One ensemble job per --ceiling-augment entry (or the --ceiling-job ones reused), combined when several,
    then `digitq evaluate` on the registered model."""
    a = h.args
    h.ensure_warm()
    jobs = [_job_record(h, *run) for run in (_reused_jobs(h) if a.ceiling_job else _trained_jobs(h))]
    model, combine_argv = _register(h, jobs)
    ev_argv, ev, ev_seconds = _evaluate(h, model)
    record = last_json(h.cli(["models", "show", model]).stdout)
    ensemble = jobs[0]["test_accuracy"] if len(jobs) == 1 else ev["accuracy"]
    summary = combined_ceiling_summary(jobs, ensemble)
    first = jobs[0]
    return CeilingResult(
        k=len(summary["members"]), epochs=first["epochs"], augment=first["augment"], argv=first["argv"],
        data_args=a.data_args, job_id=first["job_id"], reused=first["reused"],
        jobs=[{key: j[key] for key in ("job_id", "augment", "model_flags", "argv", "k", "epochs", "seed", "reused",
                                       "model", "test_accuracy", "train_seconds", "wall_seconds")} for j in jobs],
        combine_argv=combine_argv, model=model, test_accuracy=ensemble,
        member_accuracies=[m["test_accuracy"] for m in summary["members"]],
        train_seconds=sum(j["train_seconds"] for j in jobs), wall_seconds=sum(j["wall_seconds"] or 0 for j in jobs),
        client_seconds=first["client_seconds"] if len(jobs) == 1 else None, train_images=first["train_images"],
        history=merged_history(jobs), warnings=sorted({w for j in jobs for w in j["warnings"] or []}),
        cpu=first["cpu"] if len(jobs) == 1 else None, summary=summary,
        evaluate={"argv": ev_argv, "seconds": ev_seconds, "accuracy": ev.get("accuracy"), "loss": ev.get("loss"),
                  "images": ev.get("images"), "dataset": ev.get("dataset"), "model": ev.get("model")},
        registry={"kind": record.get("kind"), "members": len(record.get("members") or []), "arch": record.get("arch"),
                  "test_accuracy": record.get("test_accuracy")})


def _reused_jobs(h: Harness) -> list[tuple]:
    """The finished --ceiling-job jobs: (result, argv None, augment, k, epochs, seed, model flags) each."""
    runs = []
    for job_id in h.args.ceiling_job.split(","):
        res = h.finished_job(job_id.strip())
        req = res["request"]
        h.log(f"ceiling: reusing finished job {res['job_id']} ({req['ensemble']} x {req['epochs']} epochs)")
        runs.append((res, None, req.get("augment") or "affine", req["ensemble"], req["epochs"], req.get("seed", 0),
                     model_flags(req)))
    return runs


def _trained_jobs(h: Harness) -> list[tuple]:
    """One new ensemble job per --ceiling-augment entry, shaped like _reused_jobs'."""
    a = h.args
    k, e = a.ceiling_k, a.ceiling_epochs
    # All 60,000 training images: nothing here selects or stops on the validation set, so a
    # final model has no use for holding 5,000 of them out (--quick's data args keep theirs).
    data_args = a.data_args if arg_value(a.data_args, "--validation-size") else ["--validation-size", "0",
                                                                                 *a.data_args]
    runs = []
    for augment in a.ceiling_augment.split(","):
        argv = [*augment_flags(augment), "--ensemble", str(k), "--epochs", str(e), "--track-test", *data_args,
                "--name", "bench-ceiling"]
        h.log(f"ceiling: digitq submit-train {' '.join(argv)} --wait --json")
        # K x E augmented cnn epochs, each with a test pass: 120 s per member-epoch, plus 900 s.
        res = h.service_train(argv, timeout=max(a.timeout, k * e * 120 + 900))
        runs.append((res, argv, augment, k, e, 0, []))
    return runs


def _job_record(h: Harness, res: dict, argv, augment: str, k: int, epochs: int, seed: int, mflags: list) -> dict:
    """What the ceiling keeps of one ensemble job."""
    own = ceiling_summary(res, seed=0)
    accs = ", ".join(f"{m['test_accuracy'] * 100:.2f}%" for m in own["members"])
    recipe = " ".join(recipe_flags({"augment": augment, "model_flags": mflags}))
    h.log(f"ceiling: job {res['job_id']} ({recipe}): members {accs}, "
          f"its ensemble {res['test_accuracy'] * 100:.2f}%, {res['train_seconds']:.0f} s of training")
    return {"job_id": res["job_id"], "augment": augment, "model_flags": mflags, "argv": argv, "k": k,
            "epochs": epochs, "seed": seed, "reused": res.get("reused"), "model": res["model"],
            "test_accuracy": res["test_accuracy"], "member_accuracies": res["member_accuracies"],
            "train_seconds": res["train_seconds"], "wall_seconds": res["wall_seconds"],
            "client_seconds": res["client_seconds"], "train_images": res["train_images"], "history": res["history"],
            "warnings": res["warnings"], "cpu": res["cpu"]}


def _register(h: Harness, jobs: list[dict]) -> tuple[str, list | None]:
    """The model to score: the one job's, or the jobs' models combined with `digitq models combine`."""
    if len(jobs) == 1:
        return jobs[0]["model"], None
    combine_argv = ["models", "combine", *[j["model"] for j in jobs], "--name", "bench-ceiling-combined",
                    "--no-evaluate"]
    line = h.cli(combine_argv).stdout.strip()
    h.log(f"ceiling: `digitq {' '.join(combine_argv)}`: {line}")
    return line.split()[1].rstrip(":"), combine_argv  # "registered NAME:VERSION: the average of ..."


def _evaluate(h: Harness, model: str) -> tuple[list, dict, float]:
    """`digitq evaluate` on the model (on --quick's smaller test set): its argv, its JSON, its seconds."""
    ev_argv = ["evaluate", "--model", model, "--json"]
    test_size = arg_value(h.args.data_args, "--test-size")
    if test_size:
        ev_argv[3:3] = ["--test-size", test_size]
    t = time.perf_counter()
    ev = last_json(h.cli(ev_argv).stdout)
    seconds = time.perf_counter() - t
    h.log(f"`digitq {' '.join(ev_argv)}`: accuracy {ev['accuracy'] * 100:.2f}% over {ev['images']} images "
          f"in {seconds:.1f} s")
    return ev_argv, ev, seconds


def render(res: dict, ctx: Context) -> list[str]:
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



def plot(res: dict, path: Path, ctx: Context) -> None:
    import matplotlib.pyplot as plt

    sm = res["summary"]
    fig, ax = plt.subplots(figsize=(8.5, 5))
    colors = plt.get_cmap("tab10").colors
    accs = []
    for m in sm["members"]:
        pts = [(e["epoch"], e["test_accuracy"] * 100) for e in m["curve"] if e.get("test_accuracy") is not None]
        accs += [y for _, y in pts]
        ax.plot([x for x, _ in pts], [y for _, y in pts], "o-", ms=3, lw=1, color=colors[(m["member"] - 1) % 10],
                label=f"member {m['member']} ({member_recipe(m)}seed {m['seed']}): "
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
    title(ax, f"Accuracy ceiling: {ceiling_recipe(res)}, {plural(res['epochs'], 'epoch')} each "
              f"({f'{took / 60:.0f} min' if took >= 120 else f'{took:.0f} s'} of training)", ctx.quick)
    save(fig, path)


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


def member_recipe(member: dict) -> str:
    """A member's recipe flags and a comma, when it has a recipe of its own."""
    return f"{' '.join(recipe_flags(member))}, " if member.get("augment") else ""


def summary_rows(res: dict) -> list[str]:
    ce, sm = res, res["summary"]
    return [f"| accuracy ceiling | the goals | {ceiling_models(ce)}, {plural(ce['epochs'], 'epoch')} each: median "
            f"**{sm['member_median'] * 100:.2f}%** ({sm['member_min'] * 100:.2f}-{sm['member_max'] * 100:.2f}%)"
            + (f", `{' '.join(augment_flags(sm['single_goal_recipe']))}` ones "
               f"**{sm['single_goal_median'] * 100:.2f}%**" if "single_goal_recipe" in sm else "") +
            f"; their ensemble **{sm['ensemble_accuracy'] * 100:.2f}%** | single >= {SINGLE_GOAL * 100:.2f}% "
            f"({'met' if sm['single_goal_met'] else 'NOT met'}), ensemble >= {ENSEMBLE_GOAL * 100:.2f}% "
            f"({'met' if sm['ensemble_goal_met'] else 'NOT met'}) |"]


SECTION = Section(
    name="ceiling",
    title="Accuracy ceiling: `--augment` (`--elastic`) and `--ensemble`",
    result=CeilingResult,
    run=run,
    render=render,
    plot=plot,
    summary=summary_rows,
)
