"""Processes on this machine: `digitq local up|down|status` (the embedded stack) and `digitq worker`."""

from __future__ import annotations

import os
import sys
from typing import Annotated, Optional

import typer

from digitq.client.cli import session
from digitq.client.cli.output import friendly_errors, line, print_json
from digitq.common.errors import WorkerNotInstalled

app = typer.Typer(help="The embedded stack: a local redis-server and worker under $DIGITQ_HOME/local.",
                  no_args_is_help=True, rich_markup_mode=None)
commands = typer.Typer()
"""Top-level commands of this module (`digitq worker`)."""

JSON_OPTION = typer.Option("--json", help="Print one JSON object.")


def show_stack(st: dict, as_json: bool) -> None:
    if as_json:
        print_json(st)
        return
    r, w = st["redis"], st["worker"]
    line(f"home    {st['home']}")
    line(f"redis   {'running' if r['running'] else 'stopped'}" + (f"  pid {r['pid']}  {r['address']}" if r["running"] else ""))
    line(f"worker  {'running' if w['running'] else 'stopped'}" + (f"  pid {w['pid']}  log {w['log']}" if w["running"] else ""))
    settings = w.get("settings") or {}
    if w["running"] and settings:
        line(f"        data {settings.get('DIGITQ_DATA_DIR')}  cpu replicas {settings.get('DIGITQ_CPU_REPLICAS') or 0}"
             + (f"  gpus {settings['DIGITQ_GPUS']}" if settings.get("DIGITQ_GPUS") else ""))


@app.command("up")
@friendly_errors
def up(as_json: Annotated[bool, JSON_OPTION] = False):
    """Start the embedded redis-server and worker (if not running)."""
    show_stack(session.get_client(quiet=True).local_up(), as_json)


@app.command("down")
@friendly_errors
def down(as_json: Annotated[bool, JSON_OPTION] = False):
    """Stop the embedded worker and redis-server."""
    show_stack(session.get_client(quiet=True).local_down(), as_json)


@app.command("status")
@friendly_errors
def status(as_json: Annotated[bool, JSON_OPTION] = False):
    """Show whether the embedded stack runs, and where."""
    show_stack(session.get_client(quiet=True).local_status(), as_json)


def worker_argv(queues: str, concurrency: int, loglevel: str, hostname: str | None, gpus: str | None) -> list[str]:
    """The command line of `python -m digitq.worker` for `digitq worker`'s options."""
    argv = [sys.executable, "-m", "digitq.worker", "--queues", queues, "--concurrency", str(concurrency),
            "--loglevel", loglevel]
    if hostname:
        argv += ["--hostname", hostname]
    if gpus is not None:
        argv += ["--gpus", gpus]
    return argv


def replace_process(argv: list[str]) -> None:
    """Become `argv` (os.execv): signals then reach that program directly. Tests replace this."""
    sys.stdout.flush()
    os.execv(argv[0], argv)


@commands.command()
@friendly_errors
def worker(
    queues: Annotated[str, typer.Option(help="Comma-separated queues to serve: train, predict.")] = "train,predict",
    concurrency: Annotated[int, typer.Option(help="Job processes; keep 1 on GPU machines (one process owns the GPUs).")] = 1,
    hostname: Annotated[Optional[str], typer.Option(help="Celery node name.")] = None,
    loglevel: Annotated[str, typer.Option(help="Log level.")] = "INFO",
    gpus: Annotated[Optional[str], typer.Option(help="GPUs this worker owns, e.g. 0,1 (default: DIGITQ_GPUS, else all). Set before TensorFlow starts.")] = None,
):
    """Start a worker in the foreground (needs digitq[worker]); it serves DIGITQ_BROKER_URL."""
    import importlib.util

    if importlib.util.find_spec("tensorflow") is None:
        raise WorkerNotInstalled("the worker needs TensorFlow: pip install 'digitq[worker]'")
    replace_process(worker_argv(queues, concurrency, loglevel, hostname, gpus))
