"""Using a trained model: `predict` (a folder of images), `evaluate` (a test set), `report` (plots)."""

from __future__ import annotations

import gc
import os
import time
import uuid
from typing import Annotated, Optional

import typer
from rich.table import Table

from digitq.client.cli import session
from digitq.client.cli.output import err, friendly_errors, line, note, out, pct, print_json
from digitq.client.predict import DEFAULT_CHUNK, check_predict_options, prefetch_folder
from digitq.common.doubt import DEFAULT_MIN_CONFIDENCE
from digitq.common.registry import parse_model_ref
from digitq.common.schemas import EvaluateRequest, ReportRequest

app = typer.Typer()

PROGRESS_EVERY = 50
"""Rows between two updates of predict's progress bar."""


@app.command()
@friendly_errors
def predict(
    folder: Annotated[str, typer.Argument(help="Folder of images (PNG, JPEG, BMP, GIF, TIFF, WebP, PGM/PPM).")],
    model: Annotated[str, typer.Option(help="NAME or NAME:VERSION; NAME alone uses the promoted, else the best-scoring version.")] = "digits",
    output: Annotated[str, typer.Option("-o", "--output", help="Output file ('-' for stdout).")] = "predictions.csv",
    fmt: Annotated[str, typer.Option("--format", help="csv, or json (JSON lines).")] = "csv",
    recursive: Annotated[bool, typer.Option("--recursive", help="Include sub-folders.")] = False,
    remote: Annotated[bool, typer.Option("--remote", help="FOLDER is on the shared volume (below DIGITQ_DATA_DIR or DIGITQ_HOME): workers read it.")] = False,
    chunk_size: Annotated[int, typer.Option(help="Images per task.")] = DEFAULT_CHUNK,
    processes: Annotated[int, typer.Option("--jobs", help="Processes that preprocess images here (0 = one per core, at most 4).")] = 0,
    wait: Annotated[bool, typer.Option("--wait", help="Accepted for symmetry with submit-train: predict always runs in the foreground, writing rows as chunks finish (the client feeds the chunks).")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as one JSON object.")] = False,
    gallery: Annotated[Optional[str], typer.Option(help="Also write a PNG contact sheet of the first 400 images: each digit as the model saw it, with its prediction (not with --remote).")] = None,
    number: Annotated[bool, typer.Option("--number", help="Each image holds a number (a row of 1 to 10 digits): columns path, number, confidence, digit_confidences, flag, error (not with --remote).")] = False,
    min_confidence: Annotated[float, typer.Option(help="Flag a prediction 'unsure' when its confidence is under this (0 to 1; 0: never).")] = DEFAULT_MIN_CONFIDENCE,
):
    """Classify every image in FOLDER with a trained model; one row per file, in file order.

    Columns: path (relative to FOLDER), digit, confidence, flag, error (empty when fine), p0..p9.
    flag: blank (no digit in the image: no prediction), not-one-digit (several digits, a
    drawing, a filled shape), unsure (confidence under --min-confidence), or empty.
    The summary names the model version used. Exit code 1 only when nothing could be
    classified. With label smoothing (the default recipes' 0.1) a clean digit's confidence tops out
    near 93-94%: read it as a ranking, not as the chance of being right.
    """
    from digitq.client.numbers import check_number_options

    check_predict_options(output, fmt, gallery, remote, chunk_size, processes)  # before any work
    check_number_options(number, min_confidence, gallery, remote)
    parse_model_ref(model)
    # Local images start preprocessing now, in other processes, while this one imports Celery
    # and connects to the broker.
    prefetch = None if remote else prefetch_folder(folder, recursive=recursive, chunk_size=chunk_size,
                                                    batch_id=uuid.uuid4().hex, processes=processes, number=number)
    try:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        client = session.get_client().connect()
    except BaseException:
        if prefetch is not None:
            prefetch.close()
        raise
    # Everything imported and connected so far lives until exit: leave it out of the garbage
    # collector's full passes, which would otherwise walk its objects during the run and at exit.
    gc.freeze()
    console = err if (as_json or output == "-") else out
    started = time.monotonic()
    # The bar appears once the model is found and the folder listed (on_total), so an error
    # before that (an unknown model, a missing folder) is the only line printed.
    bar = Progress(TextColumn("classifying"), BarColumn(bar_width=30), MofNCompleteColumn(),
                   TextColumn("{task.fields[rate]}"), TimeRemainingColumn(), console=console)
    task = bar.add_task("predict", total=None, rate="")

    def on_total(n: int) -> None:
        bar.update(task, total=n)
        if not bar.live.is_started:
            bar.start()

    def on_row(done: int) -> None:
        if done % PROGRESS_EVERY == 0:
            rate = done / max(time.monotonic() - started, 1e-6)
            bar.update(task, completed=done, rate=f"{rate:,.0f} img/s")

    try:
        summary = client.predict(folder, model, output, fmt, recursive=recursive, remote=remote, chunk_size=chunk_size,
                                 processes=processes, gallery=gallery, prefetch=prefetch,
                                 on_total=on_total, on_row=on_row, number=number, min_confidence=min_confidence)
        bar.update(task, completed=summary.classified + summary.failed)
    finally:
        if bar.live.is_started:
            bar.stop()
    if as_json:
        print_json(summary.to_dict())
    else:
        flagged = f" ({summary.flagged} flagged)" if summary.flagged else ""
        line(f"{summary.classified} classified{flagged}, {summary.failed} failed -> {output} "
             f"({summary.images_per_second:,.0f} images/s)", err)
        if summary.model:
            line(f"model used: {summary.model}", err)
        if summary.gallery:
            from digitq.client.gallery import DEFAULT_LIMIT

            shown = min(summary.classified + summary.failed, DEFAULT_LIMIT)
            line(f"gallery of {shown} image(s) -> {summary.gallery}", err)
    if summary.classified == 0:
        raise typer.Exit(code=1)


@app.command()
@friendly_errors
def evaluate(
    model: Annotated[str, typer.Option(help="NAME or NAME:VERSION.")] = "digits",
    dataset: Annotated[str, typer.Option(help="mnist-test, or a labelled folder (sub-folders 0..9) on the shared volume.")] = "mnist-test",
    test_size: Annotated[Optional[int], typer.Option(help="Only the first N MNIST test images.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
):
    """Accuracy, per-class accuracy and confusion matrix of a registered model."""
    if dataset != "mnist-test":
        dataset = os.path.abspath(os.path.expanduser(dataset))
    request = EvaluateRequest.from_dict({"model": model, "dataset": dataset, "test_size": test_size})
    res = session.get_client().evaluate(request)
    if as_json:
        print_json(res.to_dict())
        return
    line(f"{res.model} on {res.dataset}: accuracy {pct(res.accuracy)} over {res.images} images (loss {res.loss:.4f})")
    out.print(confusion_table(res))
    if res.skipped:
        note(f"{len(res.skipped)} file(s) skipped, e.g. {res.skipped[0][0]}: {res.skipped[0][1]}")


def confusion_table(res) -> Table:
    """Rows: the true digit; columns: the predicted one; then each digit's accuracy. Fits 80
    columns with counts up to 99,999."""
    from rich.table import Column

    t = Table(Column("true", justify="right"), *[Column(str(d), justify="right") for d in range(10)],
              Column("accuracy", justify="right"), box=None, pad_edge=False,
              title="rows: true digit, columns: predicted digit", title_justify="left")
    for d, row in enumerate(res.confusion):
        acc = res.per_class_accuracy[d]
        t.add_row(str(d), *[str(v) for v in row], pct(acc) if acc is not None else "-")
    return t


@app.command()
@friendly_errors
def report(
    target: Annotated[str, typer.Argument(help="A training job id, a model NAME[:VERSION] (its training job), or a sweep id.")],
    output: Annotated[Optional[str], typer.Option("-o", "--output", help="Folder to write the files to. [default: report-<job id>]")] = None,
    timeout: Annotated[float, typer.Option(help="Give up after this many seconds.")] = 600,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object: job, model, files written.")] = False,
):
    """Plots and a summary of a training job: curves.png (loss and accuracy per epoch),
    confusion.png, misclassified.png (up to 64 wrong test digits), samples.png and summary.md.

    A worker draws them (predict queue) into the job's folder on the shared volume, report/,
    and sends them back, so they are written to -o DIR here without the volume mounted.
    A sweep's report: curves.png (every trial's validation accuracy per epoch), params.png
    (accuracy against each searched option) and summary.md (a table of the trials).
    """
    from digitq.client.report import check_report_output

    request = ReportRequest.from_dict({"target": target})  # a bad id or NAME:VERSION: exit 2 before any connection
    check_report_output(output)
    saved = session.get_client().report(request, output, timeout=timeout)
    if as_json:
        print_json(saved.to_dict())
        return
    line(f"report of {saved.model or saved.job_id} -> {saved.output}/ ({', '.join(saved.files)})")
