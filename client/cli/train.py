"""Training jobs: `submit-train`, `status`, `wait`, `jobs`, `cancel`.

`submit-train`'s options, their defaults and their help texts come from TrainRequest's fields
(digitq.common.schemas): the one source the worker and the README's option table share.
"""

from __future__ import annotations

import datetime
import os
import time
from typing import Annotated, Optional

import typer
from rich.table import Column, Table

from digitq.client.cli import session
from digitq.client.cli.output import (
    INTERRUPTED_EXIT, err, friendly_errors, line, note, out, pct, print_json, train_result_table,
)
from digitq.common.ensemble import check_parallel
from digitq.common.errors import InvalidRequest, JobAlreadyFinished
from digitq.common.schemas import TrainRequest, TrainResult, help_text, train_field

app = typer.Typer()


def _option(name: str) -> typer.models.OptionInfo:
    """The option for TrainRequest's field `name`: its flag (where it differs) and help text."""
    flag = train_field(name).metadata["flag"]
    return typer.Option(*([flag] if flag else []), help=help_text(name))


def _default(name: str):
    return train_field(name).default


STATE_WORDS = {"PENDING": "queued", "STARTED": "started", "PROGRESS": "running", "SUCCESS": "done",
               "FAILURE": "failed", "REVOKED": "cancelled", "RETRY": "retrying"}
"""How `digitq jobs` shows a state in its narrow column (`--json` keeps Celery's names)."""


def check_timeout(timeout: Optional[float]) -> None:
    if timeout is not None and not timeout > 0:
        raise InvalidRequest(f"--timeout must be a number of seconds > 0, got {timeout:g}")


def _wait_and_show(client, job_id: str, as_json: bool, timeout: Optional[float]) -> None:
    from digitq.client.progress import TrainProgress

    console = err if as_json else out
    if not console.is_terminal and not as_json:
        line(f"waiting for {job_id} ...", console)
    try:
        with TrainProgress(console) as bar:
            result = client.wait(job_id, on_progress=bar.update, timeout=timeout)
    except KeyboardInterrupt:
        note(f"stopped waiting; job {job_id} keeps running: `digitq wait {job_id}` to follow it again, "
             f"`digitq cancel {job_id}` to stop it")
        raise typer.Exit(code=INTERRUPTED_EXIT) from None
    if as_json:
        print_json(result)
    else:
        out.print(train_result_table(TrainResult.from_dict(result)))


@app.command("submit-train")
@friendly_errors
def submit_train(
    epochs: Annotated[int, _option("epochs")] = _default("epochs"),
    arch: Annotated[str, _option("arch")] = _default("arch"),
    batch_size: Annotated[Optional[int], _option("batch_size")] = _default("batch_size"),
    lr: Annotated[Optional[float], _option("learning_rate")] = _default("learning_rate"),
    dropout: Annotated[Optional[float], _option("dropout")] = _default("dropout"),
    conv_channels: Annotated[Optional[str], _option("conv_channels")] = None,
    dense_units: Annotated[Optional[int], _option("dense_units")] = _default("dense_units"),
    seed: Annotated[int, _option("seed")] = _default("seed"),
    name: Annotated[str, _option("name")] = _default("name"),
    dataset: Annotated[str, _option("dataset")] = _default("dataset"),
    validation_size: Annotated[int, _option("validation_size")] = _default("validation_size"),
    train_size: Annotated[Optional[int], _option("train_size")] = _default("train_size"),
    test_size: Annotated[Optional[int], _option("test_size")] = _default("test_size"),
    standardize: Annotated[bool, _option("standardize")] = _default("standardize"),
    shuffle: Annotated[bool, _option("shuffle")] = _default("shuffle"),
    schedule: Annotated[Optional[str], _option("schedule")] = _default("schedule"),
    label_smoothing: Annotated[Optional[float], _option("label_smoothing")] = _default("label_smoothing"),
    save_every: Annotated[int, _option("save_every_batches")] = _default("save_every_batches"),
    augment: Annotated[Optional[bool], _option("augment")] = None,
    elastic: Annotated[bool, typer.Option("--elastic", help="With --augment: add an elastic distortion (Simard et al. 2003: smooth random displacements, RMS ~1.1 px) to the affine transform, in the same resampling.")] = False,
    ensemble: Annotated[int, _option("ensemble")] = _default("ensemble"),
    parallel: Annotated[int, typer.Option("--parallel", help="With --ensemble: at most N members queued or running at once, the next queued as one finishes, so other jobs get workers meanwhile (0 = as many as live train workers).")] = 0,
    precision: Annotated[str, _option("precision")] = _default("precision"),
    jit: Annotated[bool, _option("jit")] = _default("jit"),
    track_test: Annotated[bool, _option("track_test")] = _default("track_test"),
    wait: Annotated[bool, typer.Option("--wait", help="Wait for the job, with a live progress bar, and print the result.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the final result as one JSON object (implies --wait).")] = False,
    timeout: Annotated[Optional[float], typer.Option(help="With --wait: give up waiting after this many seconds.")] = None,
):
    """Submit a training job; print its id, or with --wait its result."""
    if elastic and augment is False:
        raise InvalidRequest("--elastic adds to --augment's transform; it cannot go with --no-augment")
    channels = None
    if conv_channels is not None:
        try:
            channels = [int(c) for c in conv_channels.split(",") if c.strip()]
        except ValueError:
            raise InvalidRequest(f"--conv-channels takes whole numbers separated by commas, got {conv_channels!r}") from None
    fields = dict(arch=arch, epochs=epochs, batch_size=batch_size, learning_rate=lr, dropout=dropout,
                  conv_channels=channels, dense_units=dense_units, seed=seed, name=name, validation_size=validation_size,
                  train_size=train_size, test_size=test_size, standardize=standardize, shuffle=shuffle,
                  schedule=schedule, label_smoothing=label_smoothing, save_every_batches=save_every,
                  augment="elastic" if elastic else (None if augment is None else ("affine" if augment else "none")),
                  ensemble=ensemble, precision=precision, jit=jit, track_test=track_test)
    if dataset != _default("dataset"):
        fields["dataset"] = os.path.abspath(os.path.expanduser(dataset))
    request = TrainRequest.from_dict(fields)  # bad input fails here, before any connection
    check_parallel(parallel, request.ensemble)
    check_timeout(timeout)
    client = session.get_client()
    job_id = client.submit_train(request, parallel=parallel)
    if not (wait or as_json):
        line(job_id)
        return
    line(f"submitted {job_id}", err)
    _wait_and_show(client, job_id, as_json, timeout)


@app.command()
@friendly_errors
def status(
    job_id: Annotated[str, typer.Argument(help="The job id that submit printed.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
):
    """Show a job's state, progress or result."""
    st = session.get_client(quiet=True).status(job_id)
    if as_json:
        print_json(st.to_dict())
        return
    line(f"{st.job_id}  {st.kind or '?'}  {st.state}")
    if st.progress:
        line("  " + "  ".join(f"{k}={v}" for k, v in st.progress.items()))
    if st.error:
        line(f"  {st.error}")
    if st.result and "test_accuracy" in st.result:
        out.print(train_result_table(TrainResult.from_dict(st.to_dict())))
    elif st.result:
        line("  " + "  ".join(f"{k}={v}" for k, v in st.result.items()))


@app.command("wait")
@friendly_errors
def wait_cmd(
    job_id: Annotated[str, typer.Argument(help="The job id that submit printed.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as one JSON object.")] = False,
    timeout: Annotated[Optional[float], typer.Option(help="Give up after this many seconds.")] = None,
):
    """Wait for a job to finish, with a progress bar, and print its result."""
    check_timeout(timeout)
    _wait_and_show(session.get_client(quiet=True), job_id, as_json, timeout)


def _when(ts: float | None, now: float) -> str:
    """A submission time in 5 characters: 14:03 today, else Dec 02."""
    if not ts:
        return ""
    t, today = datetime.datetime.fromtimestamp(ts), datetime.datetime.fromtimestamp(now)
    return t.strftime("%H:%M") if t.date() == today.date() else t.strftime("%b %d")


def jobs_table(rows, now: float) -> Table:
    """Fits 80 columns: the full job id (to copy), short states and times; long names are cut."""
    t = Table(Column("job", no_wrap=True), Column("kind", no_wrap=True), Column("name", overflow="ellipsis", no_wrap=True, max_width=12),
              Column("state", no_wrap=True), Column("when", no_wrap=True), Column("result", no_wrap=True),
              box=None, pad_edge=False)
    for r in rows:
        if r.result and "test_accuracy" in r.result:
            res = pct(r.result["test_accuracy"])
        elif r.result and "classified" in r.result:
            res = f"{r.result['classified']} img"
        else:
            res = ""
        t.add_row(r.job_id, r.kind or "", r.name or "", STATE_WORDS.get(r.state, r.state.lower()), _when(r.submitted, now), res)
    return t


@app.command()
@friendly_errors
def jobs(
    limit: Annotated[int, typer.Option(help="How many of the most recent jobs (1 to 10000).")] = 20,
    kind: Annotated[Optional[str], typer.Option(help="Only jobs of this kind: train or predict.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON list.")] = False,
):
    """List recent jobs, newest first, with their state (queued, running, done, failed, cancelled)."""
    from digitq.client.api import MAX_JOBS_LISTED

    if not 1 <= limit <= MAX_JOBS_LISTED:
        raise InvalidRequest(f"--limit must be between 1 and {MAX_JOBS_LISTED}, got {limit}")
    if kind not in (None, "train", "predict"):
        raise InvalidRequest(f"--kind must be train or predict, got {kind!r}")
    rows = session.get_client(quiet=True).jobs(limit, kind=kind)
    if as_json:
        print_json([{k: v for k, v in r.to_dict().items() if k != "history"} for r in rows])
        return
    out.print(jobs_table(rows, time.time()))
    if not rows:
        note("no jobs" + (f" of kind {kind}" if kind else ""))


@app.command()
@friendly_errors
def cancel(job_id: Annotated[str, typer.Argument(help="The job to stop.")]):
    """Cancel a queued or running job; it is never redelivered."""
    from digitq.common.names import FINISHED_STATES

    client = session.get_client(quiet=True)
    before = client.status(job_id)
    if before.state in FINISHED_STATES:
        if before.state == "REVOKED":
            line(f"{job_id} was already cancelled")
            return
        raise JobAlreadyFinished(f"job {job_id} already ended ({STATE_WORDS[before.state]}): nothing to cancel")
    st = client.cancel(job_id)
    if st.state == "REVOKED":
        line(f"cancelled {job_id}")
    else:
        line(f"cancelling {job_id}: its worker stops it within seconds")
