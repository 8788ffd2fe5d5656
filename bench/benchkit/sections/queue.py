"""Queue latency and throughput: tiny predict tasks on the warm worker, sent with the Python client API,
against the worker's own time per task."""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass
from pathlib import Path

from benchkit.harness import Harness
from benchkit.plotting import save, title
from benchkit.section import Context, Result, Section
from benchkit.stats import burst_stats, latency_stats, sub
from benchkit.text import fs, ms
from benchkit.worklog import read_log, task_runtimes


@dataclass
class QueueResult(Result):
    model: str
    n: int
    sequential_default_poll: dict
    """stats.latency_stats of the round trips with wait_result's default polling."""
    sequential_fine_poll: dict
    """The same with 2 ms polling: the queue's own latency."""
    burst: dict
    """stats.burst_stats of --queue-n tasks sent at once."""


def run(h: Harness) -> QueueResult:
    """--queue-n tiny predict tasks one at a time (two polling intervals), then --queue-n at once."""
    from digitq.client.api import connect
    from digitq.common.names import PREDICT_QUEUE, PREDICT_TASK

    a = h.args
    h.ensure_warm()
    ref = h.models["warm"]
    c = connect(start_local=False)
    payload = {"model": ref, "pixels": base64.b64encode(bytes(784)).decode(), "count": 1}

    def one(poll: float) -> tuple[float, str]:
        t = time.perf_counter()
        r = c.app.send_task(PREDICT_TASK, args=[payload], queue=PREDICT_QUEUE)
        c.wait_result(r.id, timeout=120, poll=poll)
        return time.perf_counter() - t, r.id

    offset = h.log_offset()
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
    runtimes = task_runtimes(read_log(h.worker_log, offset))

    res = QueueResult(model=ref, n=a.queue_n, sequential_default_poll=latency_stats(seq_default, runtimes),
                      sequential_fine_poll=latency_stats(seq_fine, runtimes),
                      burst=burst_stats(a.queue_n, sent, burst, [runtimes[i] for i in ids if i in runtimes]))
    sd, sf = res.sequential_default_poll, res.sequential_fine_poll
    h.log(f"latency p50 {sd['p50'] * 1000:.1f} ms / p99 {sd['p99'] * 1000:.1f} ms (default poll), "
          f"p50 {sf['p50'] * 1000:.1f} ms (2 ms poll); burst {res.burst['jobs_per_second']:.1f} jobs/s")
    return res


def render(res: dict, ctx: Context) -> list[str]:
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
        f"{ms(sub(sd['p50'], sd['worker_p50']))} |",
        f"| one at a time, 2 ms polling (the queue's own latency) | {sf['n']} | {ms(sf['p50'])} | {ms(sf['p99'])} | "
        f"{ms(sf['mean'])} | {ms(sf['max'])} | {ms(sf['worker_p50'])} | {ms(sub(sf['p50'], sf['worker_p50']))} |", "",
        f"**Throughput:** {b['n']} tasks sent at once ({ms(b['send_seconds'])} to send them all) and drained in "
        f"{fs(b['total_seconds'], 2)}: **{b['jobs_per_second']:.1f} tasks/s**; the worker was busy "
        f"{fs(b['worker_busy_seconds'], 2)} of that (its own bound: "
        f"{b['worker_bound_jobs_per_second'] or 0:.1f} tasks/s; one solo-pool worker runs one task at a time).",
        f"With n = {sd['n']}, p99 is close to the maximum.", ""]



def plot(res: dict, path: Path, ctx: Context) -> None:
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
    title(ax, f"Queue latency of {res['n']} tiny predict tasks, one at a time; "
              f"{res['n']} at once: {b['jobs_per_second']:.1f} tasks/s", ctx.quick)
    save(fig, path)


def summary_rows(res: dict) -> list[str]:
    sd = res["sequential_default_poll"]
    return [f"| queue latency | worker's own task time | p50 **{ms(sd['p50'])}**, p99 {ms(sd['p99'])} (worker "
            f"{ms(res['sequential_fine_poll']['worker_p50'])}); {res['burst']['jobs_per_second']:.1f} tasks/s | - |"]


SECTION = Section(
    name="queue",
    title="Queue latency and throughput",
    result=QueueResult,
    run=run,
    render=render,
    plot=plot,
    summary=summary_rows,
)
