"""Watching the service: `digitq workers`, `digitq logs`, `digitq tensorboard`."""

from __future__ import annotations

import sys
import time
from typing import Annotated, Optional

import typer
from rich.table import Column, Table

from digitq.client.cli import local, session
from digitq.client.cli.output import friendly_errors, line, note, out, print_json
from digitq.common.errors import DigitqError

app = typer.Typer()


def worker_table(rows: list[dict], now: float) -> Table:
    """One row per worker, two lines each, so that a 32-character job id fits 80 columns: the node
    and its jobs done, its queues, its devices and TensorFlow, the job it runs and for how long."""
    t = Table(Column("node", no_wrap=True), Column("queues", no_wrap=True), Column("devices", no_wrap=True),
              Column("current job", no_wrap=True), box=None, pad_edge=False)
    for w in rows:
        devices = ", ".join(w.get("gpus") or []) or f"CPU x{w.get('replicas') or 1}"
        if w.get("tensorflow"):
            devices += f"\nTensorFlow {w['tensorflow']}"
        job = w.get("current_job") or {}
        current = (f"{job.get('job_id', '')}\n{job.get('task', '').split('.')[-1]}, {now - job.get('since', now):.0f} s"
                   if job else "-")
        t.add_row(f"{w['node']}\n{w.get('jobs_done', 0)} done", ",".join(w.get("queues") or []), devices, current)
    return t


@app.command()
@friendly_errors
def workers(as_json: Annotated[bool, typer.Option("--json", help="Print a JSON list.")] = False):
    """List live workers: host, queues, devices (GPUs or CPU replicas), TensorFlow, current job."""
    rows = session.get_client(quiet=True).workers()
    if as_json:
        print_json(rows)
        return
    out.print(worker_table(rows, time.time()))
    if not rows:
        note("no live workers (they announce themselves every 10 s)")


@app.command()
@friendly_errors
def logs(
    job_id: Annotated[str, typer.Argument(help="The job id.")],
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new lines until the job ends.")] = False,
):
    """Print a job's log lines, as the worker wrote them; --follow streams them live. A failed or
    cancelled job's reason follows them on stderr."""
    client = session.get_client(quiet=True)
    printed = 0
    for text in client.follow_logs(job_id, follow=follow):
        sys.stdout.write(text + "\n")
        sys.stdout.flush()
        printed += 1
    st = client.status(job_id)
    if st.state == "FAILURE":
        before = "" if printed else " before its worker logged anything"
        note(f"job {job_id} failed{before}: {st.error}")
    elif st.state == "REVOKED":
        note(f"job {job_id} was cancelled")
    elif not printed:
        note(f"no log lines yet for job {job_id} ({st.state})")


@app.command()
@friendly_errors
def tensorboard(
    target: Annotated[Optional[str], typer.Argument(help="A job id or NAME[:VERSION]; all jobs when left out.")] = None,
    start: Annotated[bool, typer.Option("--start", help="Run TensorBoard here instead of printing the command.")] = False,
    port: Annotated[int, typer.Option(help="Port for --start.")] = 6006,
):
    """Print (or --start) the TensorBoard command for a job's, a model's or all jobs' logs."""
    logdir = session.get_client(quiet=True).tensorboard_logdir(target)
    argv = ["tensorboard", "--logdir", str(logdir), "--port", str(port)]
    if not start:
        line(" ".join(argv))
        return
    import shutil

    exe = shutil.which("tensorboard")
    if not exe:
        raise DigitqError("tensorboard is not installed here: pip install 'digitq[worker]' (or run the printed command elsewhere)")
    local.replace_process([exe, *argv[1:]])
