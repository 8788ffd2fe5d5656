"""Hyperparameter sweeps: `digitq sweep` (submit, then a live table), `sweep status|wait|cancel SWEEP`.

    digitq sweep -p lr=loguniform:1e-4:1e-2 -p batch_size=choice:64,128,256 --trials 20 --epochs 6

Each trial is a normal training job; the sweep's state lives in Redis, so the client may exit
and `digitq sweep wait SWEEP` picks it up again.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Group
from rich.table import Column, Table
from rich.text import Text

from digitq.client.cli import session
from digitq.client.cli.output import INTERRUPTED_EXIT, err, friendly_errors, line, note, out, pct, print_json
from digitq.common.errors import InvalidRequest, JobCancelled, JobFailed
from digitq.common.schemas import ARCHITECTURES, train_field
from digitq.common.sweep import PRUNERS, SAMPLERS, SEARCHABLE, make_sweep_request, short_params

app = typer.Typer()

SPACE_HELP = ("NAME=SPEC, repeatable: loguniform:LO:HI, uniform:LO:HI, int:LO:HI, logint:LO:HI, choice:A,B,C, "
              "or one fixed VALUE. Searchable: " + ", ".join(SEARCHABLE) + " (short: lr, bs, widths, dense).")


def trials_table(st, now: float | None = None) -> Group:
    """A line about the sweep, then one row per trial asked so far; fits 80 columns (long parameter
    lists are cut with '...'; `*` marks the best trial)."""
    t = Table(Column("#", justify="right", no_wrap=True, min_width=3), Column("state", no_wrap=True, min_width=10),
              Column("epoch", justify="right", no_wrap=True, min_width=5),
              Column("val acc", justify="right", no_wrap=True, min_width=7),
              Column("params", overflow="ellipsis", no_wrap=True, max_width=44),
              box=None, pad_edge=False)
    best_slot = (st.best or {}).get("slot")
    for tr in st.trials:
        state = tr.get("state", "queued")
        live = tr.get("live") or {}
        epochs = tr.get("epochs") or st.request.get("base", {}).get("epochs") or "?"
        reached = tr.get("epoch") or 0
        if state == "running" and live.get("epoch"):
            epoch = f"{live['epoch']}/{epochs}"
        elif state in ("queued",) or (not reached and state != "running"):
            epoch = "-"
        else:
            epoch = f"{reached}/{epochs}"
        if state == "pruned" and tr.get("pruned_at"):
            state = f"pruned@{tr['pruned_at']}"
        acc = tr.get("val_accuracy")
        t.add_row(str(tr.get("slot")), state + (" *" if tr.get("slot") == best_slot else ""), epoch,
                  pct(acc) if isinstance(acc, (int, float)) and acc == acc else "", short_params(tr.get("params") or {}))
    return Group(Text(_title(st)), t)


def _title(st) -> str:
    req = st.request
    counts = st.counts()
    parts = [f"{n} {s}" for s, n in sorted(counts.items())]
    asked = len(st.trials)
    rest = f", {st.total - asked} to ask" if asked < st.total and st.state == "running" else ""
    return (f"{st.sweep_id} {st.state}: {st.total} trials, {req.get('parallel')} at once, pruner "
            f"{req.get('pruner')}: {', '.join(parts) or 'none yet'}{rest}")


def _summary(st) -> str:
    if st.state == "complete" and st.best:
        b = st.best
        test = f", test accuracy {pct(b['test_accuracy'])}" if isinstance(b.get("test_accuracy"), (int, float)) else ""
        return (f"best: trial {b['slot']} ({short_params(b.get('params') or {})}), val accuracy {pct(b['value'])}"
                f"{test}; registered as {st.model}")
    return f"sweep {st.sweep_id} {st.state}"


def _follow(client, sweep_id: str, as_json: bool, timeout: Optional[float]):
    """Wait with a live table (stdout a terminal), then print the final table and a summary line."""
    from rich.live import Live

    console = err if as_json else out
    try:
        if console.is_terminal:
            with Live(console=console, refresh_per_second=2, transient=True) as live:
                st = client.sweep_wait(sweep_id, on_update=lambda s: live.update(trials_table(s)), timeout=timeout)
        else:
            line(f"waiting for {sweep_id} ...", console)
            st = client.sweep_wait(sweep_id, timeout=timeout)
    except KeyboardInterrupt:
        note(f"stopped waiting; sweep {sweep_id} keeps running: `digitq sweep wait {sweep_id}` to follow it again, "
             f"`digitq sweep cancel {sweep_id}` to stop it")
        raise typer.Exit(code=INTERRUPTED_EXIT) from None
    if as_json:
        print_json(st.to_dict())
    else:
        out.print(trials_table(st))
        line(_summary(st))
    if st.state == "cancelled":
        raise JobCancelled(f"sweep {sweep_id} was cancelled")
    if st.state == "failed":
        raise JobFailed(f"sweep {sweep_id} failed: no trial completed (see `digitq logs {sweep_id}-1`)")
    return st


@app.callback(invoke_without_command=True)
@friendly_errors
def sweep(
    ctx: typer.Context,
    param: Annotated[Optional[list[str]], typer.Option("--param", "-p", help=SPACE_HELP)] = None,
    space: Annotated[Optional[Path], typer.Option(help="A JSON or YAML file of NAME: SPEC (as --param).",
                                                  dir_okay=False)] = None,
    trials: Annotated[int, typer.Option(help="N: trials in all (1 to 500).")] = 12,
    parallel: Annotated[Optional[int], typer.Option(help="P: trials queued or running at once (1 to 64). "
                                                         "[default: the live train workers]")] = None,
    pruner: Annotated[str, typer.Option(help="Stop bad trials early by val accuracy: " + ", ".join(PRUNERS) + ".")] = "asha",
    sampler: Annotated[str, typer.Option(help="How trials are chosen: " + ", ".join(SAMPLERS) + ".")] = "tpe",
    name: Annotated[str, typer.Option(help="Register the best trial's model under this name.")] = "digits",
    arch: Annotated[str, typer.Option(help="Architecture of every trial: " + ", ".join(ARCHITECTURES) + ".")
                    ] = train_field("arch").default,
    epochs: Annotated[int, typer.Option(help="Epochs per trial (unless searched).")] = 5,
    train_size: Annotated[Optional[int], typer.Option(help="Train on only the first N images. [default: all]")] = None,
    validation_size: Annotated[int, typer.Option(help="Validation images: trials are compared on them.")] = 5000,
    test_size: Annotated[Optional[int], typer.Option(help="Score on only the first N test images. [default: all]")] = None,
    seed: Annotated[int, typer.Option(help="Seed of every trial's weights and of the sampler.")] = 0,
    detach: Annotated[bool, typer.Option("--detach", help="Print the sweep id and return at once.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the final status as one JSON object.")] = False,
    timeout: Annotated[Optional[float], typer.Option(help="Give up waiting after this many seconds.")] = None,
):
    """Run a hyperparameter sweep: N trials of `submit-train` over the --param space, at most P at
    once over the workers, bad trials pruned at an epoch's end; the best registered as NAME:VERSION."""
    if ctx.invoked_subcommand is not None:
        return
    from digitq.client.sweep import check_options, default_parallel

    check_options(trials, parallel)
    if timeout is not None and not timeout > 0:
        raise InvalidRequest(f"--timeout must be a number of seconds > 0, got {timeout:g}")
    text = None
    if space is not None:
        try:
            text = space.read_text()
        except OSError as exc:
            raise InvalidRequest(f"cannot read --space {space}: {exc.strerror}") from None
    if not param and text is None:
        raise InvalidRequest("empty search space: give --param NAME=SPEC (e.g. lr=loguniform:1e-4:1e-2) or --space FILE")
    request = make_sweep_request(param, text, str(space or "space"), trials=trials, parallel=parallel or 1,
                                 pruner=pruner, sampler=sampler, name=name, arch=arch, epochs=epochs,
                                 train_size=train_size, validation_size=validation_size, test_size=test_size,
                                 seed=seed)  # bad input fails here, before any connection
    client = session.get_client()
    if parallel is None:
        request = dataclasses.replace(request, parallel=default_parallel(client, trials))
        request.check()
    sweep_id = client.sweep_submit(request)
    if detach:
        line(sweep_id)
        return
    line(f"submitted {sweep_id}", err)
    _follow(client, sweep_id, as_json, timeout)


@app.command()
@friendly_errors
def status(
    sweep_id: Annotated[str, typer.Argument(help="The sweep id that `digitq sweep` printed.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
):
    """A sweep's trials: parameters, epoch reached, val accuracy, state."""
    st = session.get_client(quiet=True).sweep_status(sweep_id)
    if as_json:
        print_json(st.to_dict())
        return
    out.print(trials_table(st, time.time()))
    if st.state != "running":
        line(_summary(st))


@app.command("wait")
@friendly_errors
def wait_cmd(
    sweep_id: Annotated[str, typer.Argument(help="The sweep id that `digitq sweep` printed.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the final status as one JSON object.")] = False,
    timeout: Annotated[Optional[float], typer.Option(help="Give up after this many seconds.")] = None,
):
    """Follow a sweep (a live table) until it ends; exit 0 once its best model is registered."""
    if timeout is not None and not timeout > 0:
        raise InvalidRequest(f"--timeout must be a number of seconds > 0, got {timeout:g}")
    _follow(session.get_client(quiet=True), sweep_id, as_json, timeout)


@app.command()
@friendly_errors
def cancel(sweep_id: Annotated[str, typer.Argument(help="The sweep to stop.")]):
    """Stop a sweep: queued trials never run, running ones stop within seconds."""
    st = session.get_client(quiet=True).sweep_cancel(sweep_id)
    if st.state == "cancelled":
        line(f"cancelled {sweep_id}")
    else:
        line(f"{sweep_id} already ended ({st.state}): nothing to cancel")
