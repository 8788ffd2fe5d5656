"""Scaling: training images/s with 1 and 2 CPU replicas (the bare helper), and 1 and 2 worker processes on
two concurrent jobs (a second worker started against the embedded broker)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from benchkit.config import TINY_ARGS
from benchkit.harness import Harness
from benchkit.plotting import save, title
from benchkit.section import Context, Result, Section
from benchkit.stats import div, median
from benchkit.text import fr, pct


@dataclass
class ScalingResult(Result):
    train_images: int
    test_images: int
    replicas: dict
    """{"1": ..., "2": ...}: images/s (steady, whole epoch), fit seconds, global batch, the runs."""
    workers: dict
    """{"1": ..., "2": ...}: seconds until both jobs finished, images/s, the runs."""
    replica_speedup_steady: float | None
    replica_speedup_epoch: float | None
    worker_speedup: float | None


def run(h: Harness) -> ScalingResult:
    """(1) the bare helper with 1 and 2 CPU replicas; (2) two concurrent jobs on one worker and on two."""
    a = h.args
    test = "500" if a.quick else "1000"
    common = ["--epochs", "1", "--train-size", str(a.scale_images), "--validation-size", "0", "--test-size", test]
    # (1) replicas: the bare helper with digitq's strategy over 1 or 2 logical CPU devices.
    replicas = {1: [], 2: []}
    for i in range(a.repeats):
        for k in ((1, 2) if i % 2 == 0 else (2, 1)):
            r = h.bare_train([*common, "--strategy", "mirrored", "--steady"], {"DIGITQ_CPU_REPLICAS": str(k)})
            replicas[k].append(r)
            h.log(f"replicas={k}: {r['history'][0]['images_per_second']:,.0f} images/s (epoch), "
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
    h.ensure_warm()
    w2, w1 = h.start_w2()
    workers = {1: [], 2: []}
    try:
        h.consume(w1, False)  # warm the second worker with a tiny job of its own
        try:
            h.service_train(TINY_ARGS + ["--name", "bench-warm"])
        finally:
            h.consume(w1, True)
        for i in range(a.repeats):
            for k in ((1, 2) if i % 2 == 0 else (2, 1)):
                h.consume(w2, k == 2)
                r = h.concurrent_jobs(2, [*common, "--name", "bench-scale"])
                workers[k].append(r)
                h.log(f"{k} worker(s): 2 jobs in {r['total_seconds']:.1f} s on {', '.join(r['workers_used'])}")
    finally:
        h.stop_w2()
    wk = {}
    for k, rs in workers.items():
        wk[str(k)] = {"total_seconds": median(r["total_seconds"] for r in rs),
                      "images_per_second": median(r["images_per_second"] for r in rs),
                      "job_wall_seconds": median(j["wall_seconds"] for r in rs for j in r["jobs"]),
                      "job_images_per_second": median(j["images_per_second"] for r in rs for j in r["jobs"]),
                      "all_on_distinct_workers": all(len(r["workers_used"]) == k for r in rs),
                      "other_share": median((r.get("cpu") or {}).get("other_share") for r in rs), "runs": rs}
    return ScalingResult(
        train_images=a.scale_images, test_images=int(test), replicas=rep, workers=wk,
        replica_speedup_steady=div(rep["2"]["steady_images_per_second"], rep["1"]["steady_images_per_second"]),
        replica_speedup_epoch=div(rep["2"]["epoch_images_per_second"], rep["1"]["epoch_images_per_second"]),
        worker_speedup=div(wk["1"]["total_seconds"], wk["2"]["total_seconds"]))


def render(res: dict, ctx: Context) -> list[str]:
    rep, wk = res["replicas"], res["workers"]
    cores = ctx.machine["usable_cpus"]
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



def plot(res: dict, path: Path, ctx: Context) -> None:
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
    title(fig, f"Scaling on {ctx.machine['usable_cpus']} CPU cores", ctx.quick)
    save(fig, path)


def summary_rows(res: dict) -> list[str]:
    return [f"| scaling | 1 replica / 1 worker | 2 replicas **{fr(res['replica_speedup_steady'])}** images/s; "
            f"2 workers **{fr(res['worker_speedup'])}** on 2 jobs | - |"]


SECTION = Section(
    name="scaling",
    title="Scaling: replicas and workers",
    result=ScalingResult,
    run=run,
    render=render,
    plot=plot,
    summary=summary_rows,
    repeats=lambda args: args.repeats,
)
