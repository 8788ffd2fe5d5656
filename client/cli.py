"""The `digitq` command line (Typer). Every command's docstring is its --help text."""

from __future__ import annotations

import functools
import gc
import json
import os
import sys
import time
import uuid
from pathlib import Path
from enum import Enum
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Column, Table

from digitq.common.errors import DigitqError, InvalidRequest
from digitq.common.names import FINISHED_STATES
from digitq.common.schemas import TrainRequest

app = typer.Typer(
    name="digitq",
    help="Train handwritten-digit classifiers and classify image folders through a Redis/Celery queue.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
local_app = typer.Typer(help="The embedded stack: a local redis-server and worker under $DIGITQ_HOME/local.",
                        no_args_is_help=True, rich_markup_mode=None)
app.add_typer(local_app, name="local")
models_app = typer.Typer(help="The model registry: every successful training registers NAME:VERSION.",
                         no_args_is_help=True, rich_markup_mode=None)
app.add_typer(models_app, name="models")

# soft_wrap: a long line stays one line when piped (scripts parse these lines).
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


def friendly_errors(fn):
    """Turn expected failures into one line on stderr and a non-zero exit, never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        import redis
        from kombu.exceptions import OperationalError

        try:
            return fn(*args, **kwargs)
        except DigitqError as exc:
            err.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
            raise typer.Exit(code=exc.exit_code)
        except (redis.exceptions.RedisError, OperationalError) as exc:
            err.print(f"error: broker unavailable: {exc}", markup=False, highlight=False, soft_wrap=True)
            raise typer.Exit(code=1)
        except KeyboardInterrupt:
            err.print("interrupted", markup=False)
            raise typer.Exit(code=130)

    return wrapper


def _client(quiet: bool = False):
    from digitq.client.api import connect

    return connect(notify=None if quiet else (lambda msg: err.print(msg, markup=False, highlight=False)))


def _print_json(obj) -> None:
    sys.stdout.write(json.dumps(obj, default=str) + "\n")


def _print_train_result(res: dict) -> None:
    t = Table(show_header=False, box=None)
    t.add_row("job", res["job_id"])
    t.add_row("model", f"{res.get('model')} ({res.get('arch')}, {res.get('replicas')} replica(s) on {', '.join(res.get('devices') or [])})")
    t.add_row("test accuracy", f"{res['test_accuracy'] * 100:.2f}%  (loss {res['test_loss']:.4f})")
    t.add_row("epochs", f"{res['epochs']}  ({res.get('train_images')} training images)")
    for e in res.get("history", []):
        t.add_row(f"  {'model ' + str(e['member']) + ' ' if 'member' in e else ''}epoch {e['epoch']}", f"{e['seconds']:.1f} s  loss {e.get('loss', 0):.4f}  "
                  f"val_acc {e.get('val_accuracy', float('nan')):.4f}  {e.get('images_per_second', 0):.0f} img/s"
                  + ("  (resumed)" if e.get("resumed") else ""))
    if res.get("member_accuracies"):
        t.add_row("members", "  ".join(f"{a * 100:.2f}%" for a in res["member_accuracies"]) + "  (averaged above)")
    for w in res.get("warnings") or []:
        t.add_row("warning", w)
    t.add_row("wall time", f"{res['wall_seconds']:.1f} s")
    t.add_row("model file", res.get("model_path", ""))
    out.print(t)


def _wait_and_show(client, job_id: str, as_json: bool, timeout: Optional[float]) -> None:
    from digitq.client.progress import TrainProgress

    console = err if as_json else out
    if not console.is_terminal and not as_json:
        console.print(f"waiting for {job_id} ...", markup=False)
    with TrainProgress(console) as bar:
        result = client.wait(job_id, on_progress=bar.update, timeout=timeout)
    if as_json:
        _print_json(result)
    else:
        _print_train_result(result)


class Arch(str, Enum):
    cnn = "cnn"
    seed_cnn = "seed-cnn"
    mlp = "mlp"


@app.command("submit-train")
@friendly_errors
def submit_train(
    epochs: Annotated[int, typer.Option(help="Passes over the training set.")] = 5,
    arch: Annotated[str, typer.Option(help="Architecture: cnn (default), seed-cnn (the tutorials' CNN) or mlp.")] = "cnn",
    batch_size: Annotated[Optional[int], typer.Option(help="Images per replica per step (global = this x replicas). [default: the architecture's]")] = None,
    lr: Annotated[Optional[float], typer.Option(help="Peak learning rate. [default: the architecture's]")] = None,
    dropout: Annotated[Optional[float], typer.Option(help="Dropout rate, 0 to 0.95.")] = None,
    conv_channels: Annotated[Optional[str], typer.Option(help="Channels per conv stage: 3 for cnn (32,64,128), 2 for seed-cnn (32,64).")] = None,
    dense_units: Annotated[Optional[int], typer.Option(help="Units of the hidden dense layer.")] = None,
    seed: Annotated[int, typer.Option(help="Seed for weights and shuffling.")] = 0,
    name: Annotated[str, typer.Option(help="Register the trained model under this name.")] = "digits",
    dataset: Annotated[str, typer.Option(help="'mnist', or a folder (below DIGITQ_DATA_DIR or DIGITQ_HOME) with sub-folders 0..9.")] = "mnist",
    validation_size: Annotated[int, typer.Option(help="Hold out the last N training images for validation.")] = 5000,
    train_size: Annotated[Optional[int], typer.Option(help="Train on only the first N images (quick experiments).")] = None,
    test_size: Annotated[Optional[int], typer.Option(help="Evaluate on only the first N test images.")] = None,
    standardize: Annotated[bool, typer.Option(help="Standardise pixels with the training set's mean and std.")] = True,
    shuffle: Annotated[bool, typer.Option(help="Reshuffle the training set every epoch (seeded).")] = True,
    schedule: Annotated[Optional[str], typer.Option(help="Learning-rate schedule: onecycle or constant.")] = None,
    label_smoothing: Annotated[Optional[float], typer.Option(help="Label smoothing, 0 to 0.5. [default: the architecture's]")] = None,
    save_every: Annotated[int, typer.Option(help="Back up every N batches as well as every epoch (0 = epochs only).")] = 0,
    augment: Annotated[Optional[bool], typer.Option("--augment/--no-augment", help="Random affine augmentation (rotation, shear, zoom, shift), or none at all. [default: the architecture's: random shifts for cnn, none for the others]")] = None,
    elastic: Annotated[bool, typer.Option("--elastic", help="With --augment: add an elastic distortion (Simard et al. 2003: smooth random displacements, RMS ~1.1 px) to the affine transform, in the same resampling.")] = False,
    ensemble: Annotated[int, typer.Option(help="Train K models (seeds seed..seed+K-1) as one job; predictions are averaged.")] = 1,
    precision: Annotated[str, typer.Option(help="float32, or mixed (mixed_float16 with loss scaling; GPUs only, ignored with a warning on CPUs).")] = "float32",
    jit: Annotated[bool, typer.Option("--jit", help="XLA compilation (GPUs only, ignored with a warning on CPUs).")] = False,
    track_test: Annotated[bool, typer.Option("--track-test", help="Also score the test set after every epoch (history gets test_accuracy).")] = False,
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
                  ensemble=ensemble,
                  precision=precision, jit=jit, track_test=track_test)
    if dataset != "mnist":
        fields["dataset"] = os.path.abspath(os.path.expanduser(dataset))
    request = TrainRequest.from_dict(fields)  # bad input fails here, before any connection
    client = _client()
    job_id = client.submit_train(request)
    if not (wait or as_json):
        out.print(job_id, markup=False, highlight=False)
        return
    err.print(f"submitted {job_id}", markup=False, highlight=False)
    _wait_and_show(client, job_id, as_json, timeout)


@app.command()
@friendly_errors
def status(
    job_id: Annotated[str, typer.Argument(help="The job id that submit printed.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
):
    """Show a job's state, progress or result."""
    st = _client(quiet=True).status(job_id)
    if as_json:
        _print_json(st.to_dict())
        return
    out.print(f"{st.job_id}  {st.kind or '?'}  {st.state}", markup=False, highlight=False)
    if st.progress:
        p = st.progress
        out.print("  " + "  ".join(f"{k}={v}" for k, v in p.items()), markup=False, highlight=False)
    if st.error:
        out.print(f"  {st.error}", markup=False, highlight=False)
    if st.result and "test_accuracy" in st.result:
        _print_train_result(st.to_dict())
    elif st.result:
        out.print("  " + "  ".join(f"{k}={v}" for k, v in st.result.items()), markup=False, highlight=False)


@app.command("wait")
@friendly_errors
def wait_cmd(
    job_id: Annotated[str, typer.Argument(help="The job id that submit printed.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as one JSON object.")] = False,
    timeout: Annotated[Optional[float], typer.Option(help="Give up after this many seconds.")] = None,
):
    """Wait for a job to finish, with a progress bar, and print its result."""
    _wait_and_show(_client(quiet=True), job_id, as_json, timeout)


@app.command()
@friendly_errors
def jobs(
    limit: Annotated[int, typer.Option(help="How many of the most recent jobs.")] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON list.")] = False,
):
    """List recent jobs, newest first, with their state."""
    import datetime

    rows = _client(quiet=True).jobs(limit)
    if as_json:
        _print_json([{k: v for k, v in r.to_dict().items() if k != "history"} for r in rows])
        return
    t = Table(Column("job", min_width=32, no_wrap=True), "kind", "name", "state", "submitted", "accuracy")
    for r in rows:
        when = datetime.datetime.fromtimestamp(r.submitted).strftime("%Y-%m-%d %H:%M:%S") if r.submitted else ""
        acc = f"{r.result['test_accuracy'] * 100:.2f}%" if r.result and "test_accuracy" in r.result else ""
        t.add_row(r.job_id, r.kind or "", r.name or "", r.state, when, acc)
    out.print(t)


@app.command()
@friendly_errors
def cancel(job_id: Annotated[str, typer.Argument(help="The job to stop.")]):
    """Cancel a queued or running job; it is never redelivered."""
    st = _client(quiet=True).cancel(job_id)
    out.print(f"{job_id}  {st.state}", markup=False, highlight=False)


@app.command()
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
        raise DigitqError("the worker needs TensorFlow: pip install 'digitq[worker]'")
    argv = [sys.executable, "-m", "digitq.worker", "--queues", queues, "--concurrency", str(concurrency),
            "--loglevel", loglevel]
    if hostname:
        argv += ["--hostname", hostname]
    if gpus is not None:
        argv += ["--gpus", gpus]
    sys.stdout.flush()
    os.execv(sys.executable, argv)  # the worker replaces this process: signals reach Celery directly


@app.command()
@friendly_errors
def predict(
    folder: Annotated[str, typer.Argument(help="Folder of images (PNG, JPEG, BMP, GIF, TIFF, WebP, PGM/PPM).")],
    model: Annotated[str, typer.Option(help="NAME or NAME:VERSION; NAME alone uses the promoted, else the newest version.")] = "digits",
    output: Annotated[str, typer.Option("-o", "--output", help="Output file ('-' for stdout).")] = "predictions.csv",
    fmt: Annotated[str, typer.Option("--format", help="csv, or json (JSON lines).")] = "csv",
    recursive: Annotated[bool, typer.Option("--recursive", help="Include sub-folders.")] = False,
    remote: Annotated[bool, typer.Option("--remote", help="FOLDER is on the shared volume (below DIGITQ_DATA_DIR or DIGITQ_HOME): workers read it.")] = False,
    chunk_size: Annotated[int, typer.Option(help="Images per task.")] = 500,
    jobs: Annotated[int, typer.Option(help="Processes that preprocess images here (0 = one per core, at most 4).")] = 0,
    wait: Annotated[bool, typer.Option("--wait", help="Accepted for symmetry with submit-train: predict always runs in the foreground, writing rows as chunks finish (the client feeds the chunks).")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as one JSON object.")] = False,
    gallery: Annotated[Optional[str], typer.Option(help="Also write a PNG contact sheet of the first 400 images: each digit as the model saw it, with its prediction (not with --remote).")] = None,
):
    """Classify every image in FOLDER with a trained model; one row per file, in file order.

    Columns: path (relative to FOLDER), digit, confidence, error (empty when fine), p0..p9.
    Exit code 1 only when nothing could be classified.
    """
    from digitq.client.predict import RowWriter, predict_folder, prefetch_folder

    if gallery is not None:
        if remote:
            raise InvalidRequest("--gallery draws the images as they are preprocessed here; with --remote the workers read them")
        if Path(gallery).expanduser().is_dir() or not Path(gallery).expanduser().parent.is_dir():
            raise InvalidRequest(f"--gallery {gallery}: give a file name in an existing folder")
    writer = RowWriter(output, fmt)  # refuse a bad --format/-o before any work
    batch_id = uuid.uuid4().hex
    # Local images start preprocessing now, in other processes, while this one imports Celery
    # and connects to the broker (a few tenths of a second on one core).
    prefetch = None if remote else prefetch_folder(folder, recursive=recursive, chunk_size=chunk_size,
                                                    batch_id=batch_id, jobs=jobs)
    try:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        sheet = None
        if gallery is not None:
            from digitq.client.gallery import ContactSheet

            sheet = ContactSheet()
        client = _client()
    except BaseException:
        if prefetch is not None:
            prefetch.close()
        raise
    # Everything imported so far lives until exit: leave it out of the garbage collector's full
    # passes, which otherwise walk its ~70,000 objects during the run and again at exit (~0.2 s).
    gc.freeze()
    ok = False
    started = time.monotonic()
    console = err if (as_json or output == "-") else out
    try:
        with Progress(TextColumn("[bold]classifying"), BarColumn(bar_width=30), MofNCompleteColumn(),
                      TextColumn("{task.fields[rate]}"), TimeRemainingColumn(), console=console) as bar:
            task = bar.add_task("predict", total=None, rate="")
            for row in predict_folder(client, folder, model, recursive=recursive, chunk_size=chunk_size,
                                      remote=remote, on_total=lambda n: bar.update(task, total=n),
                                      batch_id=batch_id, jobs=jobs, keep_pixels=sheet is not None,
                                      prefetch=prefetch):
                writer.write(row)
                if sheet is not None:
                    d = row.as_dict()
                    sheet.add(row.pixels, row.path, d["digit"] if row.probs is not None else None,
                              d["confidence"] if row.probs is not None else None, row.error)
                done = writer.classified + writer.failed
                if done % 50 == 0:
                    rate = done / max(time.monotonic() - started, 1e-6)
                    bar.update(task, completed=done, rate=f"{rate:,.0f} img/s")
            bar.update(task, completed=writer.classified + writer.failed)
        ok = True
    finally:
        writer.close(keep=ok)
        if not ok:
            client.finish_job(batch_id, "FAILURE", "interrupted or failed before all rows were written")
    seconds = time.monotonic() - started
    summary = {"job_id": batch_id, "classified": writer.classified, "failed": writer.failed, "output": output,
               "seconds": round(seconds, 3), "images_per_second": round((writer.classified + writer.failed) / seconds, 1)}
    if sheet is not None and len(sheet):
        summary["gallery"] = str(sheet.save(Path(gallery).expanduser()))
    client.finish_job(batch_id, "SUCCESS", summary)
    if as_json:
        _print_json(summary)
    else:
        err.print(f"{writer.classified} classified, {writer.failed} failed -> {output} "
                  f"({summary['images_per_second']:,.0f} images/s)", markup=False, highlight=False)
        if "gallery" in summary:
            err.print(f"gallery of {len(sheet)} image(s) -> {summary['gallery']}", markup=False, highlight=False)
    if writer.classified == 0:
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
    from digitq.common.names import EVALUATE_TASK, PREDICT_QUEUE
    from digitq.common.registry import resolve_model
    from digitq.common.schemas import EvaluateRequest

    if dataset != "mnist-test":
        dataset = os.path.abspath(os.path.expanduser(dataset))
    req = EvaluateRequest.from_dict({"model": model, "dataset": dataset, "test_size": test_size})
    client = _client()
    resolve_model(client.redis, req.model)  # unknown model: fail before queueing
    res = client.call(EVALUATE_TASK, req.to_dict(), PREDICT_QUEUE)
    if as_json:
        _print_json(res)
        return
    out.print(f"{res['model']} on {res['dataset']}: accuracy {res['accuracy'] * 100:.2f}% over {res['images']} images "
              f"(loss {res['loss']:.4f})", markup=False, highlight=False)
    t = Table("true \\ predicted", *[str(d) for d in range(10)], "accuracy")
    for d, row in enumerate(res["confusion"]):
        acc = res["per_class_accuracy"][d]
        t.add_row(str(d), *[str(v) for v in row], f"{acc * 100:.2f}%" if acc is not None else "-")
    out.print(t)


@app.command()
@friendly_errors
def report(
    target: Annotated[str, typer.Argument(help="A training job id, or a model NAME[:VERSION] (its training job).")],
    output: Annotated[Optional[str], typer.Option("-o", "--output", help="Folder to write the files to. [default: report-<job id>]")] = None,
    timeout: Annotated[float, typer.Option(help="Give up after this many seconds.")] = 600,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object: job, model, files written.")] = False,
):
    """Plots and a summary of a training job: curves.png (loss and accuracy per epoch),
    confusion.png, misclassified.png (up to 64 wrong test digits), samples.png and summary.md.

    A worker draws them (predict queue) into the job's folder on the shared volume, report/,
    and sends them back, so they are written to -o DIR here without the volume mounted.
    """
    from digitq.client.report import check_report_target, write_report_files
    from digitq.common.names import PREDICT_QUEUE, REPORT_TASK
    from digitq.common.registry import resolve_model

    check_report_target(target)  # a bad id or NAME:VERSION: exit 2 before any connection
    if output is not None and Path(output).expanduser().exists() and not Path(output).expanduser().is_dir():
        raise DigitqError(f"output {output} exists and is not a folder")
    client = _client()
    if ":" in target:
        resolve_model(client.redis, target)  # unknown model: fail before queueing
    res = client.call(REPORT_TASK, {"target": target}, PREDICT_QUEUE, timeout=timeout)
    folder = Path(output or f"report-{res['job_id']}").expanduser()
    paths = write_report_files(res, folder)
    if as_json:
        _print_json({"job_id": res["job_id"], "model": res.get("model"), "output": str(folder),
                     "files": [p.name for p in paths], "worker_folder": res.get("folder")})
        return
    out.print(f"report of {res.get('model') or res['job_id']} -> {folder}/ ({', '.join(p.name for p in paths)})",
              markup=False, highlight=False)


def _model_rows(records: list) -> Table:
    import datetime

    t = Table("model", "arch", "test accuracy", "promoted", "created", "job")
    for r in records:
        when = datetime.datetime.fromtimestamp(r.get("created", 0)).strftime("%Y-%m-%d %H:%M")
        acc = r.get("test_accuracy")
        t.add_row(f"{r['name']}:{r['version']}", r.get("arch", ""), f"{acc * 100:.2f}%" if acc is not None else "",
                  "yes" if r.get("promoted") else "", when, r.get("job_id", ""))
    return t


@models_app.command("list")
@friendly_errors
def models_list(as_json: Annotated[bool, typer.Option("--json", help="Print a JSON list.")] = False):
    """Every registered model version, newest first per name."""
    from digitq.common.registry import list_models

    records = list_models(_client(quiet=True).redis)
    _print_json(records) if as_json else out.print(_model_rows(records))


@models_app.command("show")
@friendly_errors
def models_show(ref: Annotated[str, typer.Argument(help="NAME or NAME:VERSION.")]):
    """One model version's record (JSON): hyperparameters, dataset, accuracy, file."""
    from digitq.common.registry import resolve_model

    _print_json(resolve_model(_client(quiet=True).redis, ref))


@models_app.command("promote")
@friendly_errors
def models_promote(ref: Annotated[str, typer.Argument(help="NAME:VERSION to make NAME resolve to.")]):
    """Make NAME (without a version) resolve to this version."""
    from digitq.common.registry import promote_model

    rec = promote_model(_client(quiet=True).redis, ref)
    out.print(f"{rec['name']} -> {rec['name']}:{rec['version']}", markup=False, highlight=False)


@models_app.command("delete")
@friendly_errors
def models_delete(ref: Annotated[str, typer.Argument(help="NAME:VERSION to remove from the registry.")]):
    """Remove a version from the registry (the job's files stay on the shared volume)."""
    from digitq.common.registry import delete_model

    rec = delete_model(_client(quiet=True).redis, ref)
    out.print(f"deleted {rec['name']}:{rec['version']}", markup=False, highlight=False)


@models_app.command("combine")
@friendly_errors
def models_combine(
    refs: Annotated[list[str], typer.Argument(help="Two or more models (NAME or NAME:VERSION) to average.")],
    name: Annotated[str, typer.Option(help="Register the combination under this name.")] = "ensemble",
    evaluate: Annotated[bool, typer.Option(help="Score it on the MNIST test set through the queue and store the accuracy in its record.")] = True,
):
    """Register the average of several models as a new ensemble version (e.g. K jobs trained in
    parallel, or different recipes). Each network weighs the same; predict and evaluate use it
    like any other model."""
    from digitq.common.names import EVALUATE_TASK, PREDICT_QUEUE
    from digitq.common.registry import combine_models, record_scores

    client = _client(quiet=True)
    rec = combine_models(client.redis, name, refs)
    ref = f"{rec['name']}:{rec['version']}"
    line = f"registered {ref}: the average of {len(rec['members'])} networks from {', '.join(rec['combined_from'])}"
    if evaluate:
        res = client.call(EVALUATE_TASK, {"model": ref, "dataset": "mnist-test"}, PREDICT_QUEUE)
        record_scores(client.redis, ref, res["accuracy"], res["loss"])
        line += f"; MNIST test accuracy {res['accuracy'] * 100:.2f}% (loss {res['loss']:.4f})"
    out.print(line, markup=False, highlight=False)


@models_app.command("export")
@friendly_errors
def models_export(
    ref: Annotated[str, typer.Argument(help="NAME or NAME:VERSION.")],
    directory: Annotated[str, typer.Argument(help="Where to write the SavedModel (must not exist yet).")],
):
    """Write a TensorFlow SavedModel with a serving signature (for TensorFlow Serving).

    Runs here: needs digitq[worker] and the shared volume mounted at DIGITQ_HOME.
    """
    import importlib.util

    from digitq.common.registry import resolve_model

    if Path(directory).expanduser().exists():
        raise DigitqError(f"{directory} already exists; export writes a new folder")
    rec = resolve_model(_client(quiet=True).redis, ref)
    if importlib.util.find_spec("tensorflow") is None:
        raise DigitqError("export needs TensorFlow here: pip install 'digitq[worker]'")
    from digitq.worker.export import export_saved_model

    path = export_saved_model(rec, directory)
    out.print(f"exported {rec['name']}:{rec['version']} to {path}", markup=False, highlight=False)


@app.command()
@friendly_errors
def workers(as_json: Annotated[bool, typer.Option("--json", help="Print a JSON list.")] = False):
    """List live workers: host, queues, devices (GPUs or CPU replicas), TensorFlow, current job."""
    rows = _client(quiet=True).workers()
    if as_json:
        _print_json(rows)
        return
    t = Table("node", "queues", "devices", "tensorflow", "current job", "jobs done")
    for w in rows:
        devices = ", ".join(w.get("gpus") or []) or f"CPU x{w.get('replicas') or 1}"
        job = w.get("current_job") or {}
        current = f"{job.get('job_id', '')} ({job.get('task', '').split('.')[-1]}, {time.time() - job.get('since', time.time()):.0f} s)" if job else ""
        t.add_row(w["node"], ",".join(w.get("queues") or []), devices, w.get("tensorflow") or "", current,
                  str(w.get("jobs_done", 0)))
    out.print(t)
    if not rows:
        err.print("no live workers (they announce themselves every 10 s)", markup=False)


@app.command()
@friendly_errors
def logs(
    job_id: Annotated[str, typer.Argument(help="The job id.")],
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new lines until the job ends.")] = False,
):
    """Print a job's log lines, as the worker wrote them; --follow streams them live."""
    client = _client(quiet=True)
    st = client.status(job_id)  # unknown job: a clear error
    seen = 0
    while True:
        lines = client.logs(job_id, seen)
        for line in lines:
            sys.stdout.write(line + "\n")
        sys.stdout.flush()
        seen += len(lines)
        if not follow or (st.state in FINISHED_STATES and not lines):
            break
        time.sleep(0.5)
        st = client.status(job_id)


@app.command()
@friendly_errors
def tensorboard(
    target: Annotated[Optional[str], typer.Argument(help="A job id or NAME[:VERSION]; all jobs when left out.")] = None,
    start: Annotated[bool, typer.Option("--start", help="Run TensorBoard here instead of printing the command.")] = False,
    port: Annotated[int, typer.Option(help="Port for --start.")] = 6006,
):
    """Print (or --start) the TensorBoard command for a job's, a model's or all jobs' logs."""
    from digitq.common.settings import load_settings

    settings = load_settings()
    logdir = settings.jobs_dir
    if target:
        from digitq.common.registry import resolve_model
        from digitq.common.schemas import JOB_ID_RE

        if ":" not in target and JOB_ID_RE.match(target) and (settings.jobs_dir / target).is_dir():
            job_id = target
        else:
            job_id = resolve_model(_client(quiet=True).redis, target)["job_id"]
        logdir = settings.jobs_dir / job_id / "tensorboard"
    argv = ["tensorboard", "--logdir", str(logdir), "--port", str(port)]
    if not start:
        out.print(" ".join(argv), markup=False, highlight=False)
        return
    import shutil

    exe = shutil.which("tensorboard")
    if not exe:
        raise DigitqError("tensorboard is not installed here: pip install 'digitq[worker]' (or run the printed command elsewhere)")
    os.execv(exe, argv)


def _show_local(st: dict, as_json: bool) -> None:
    if as_json:
        _print_json(st)
        return
    r, w = st["redis"], st["worker"]
    out.print(f"home    {st['home']}", markup=False, highlight=False)
    out.print(f"redis   {'running' if r['running'] else 'stopped'}" + (f"  pid {r['pid']}  {r['address']}" if r["running"] else ""), markup=False, highlight=False)
    out.print(f"worker  {'running' if w['running'] else 'stopped'}" + (f"  pid {w['pid']}  log {w['log']}" if w["running"] else ""), markup=False, highlight=False)


@local_app.command("up")
@friendly_errors
def local_up(as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False):
    """Start the embedded redis-server and worker (if not running)."""
    from digitq.common.settings import load_settings
    from digitq.common.stack import LocalStack

    _show_local(LocalStack(load_settings()).up(), as_json)


@local_app.command("down")
@friendly_errors
def local_down(as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False):
    """Stop the embedded worker and redis-server."""
    from digitq.common.settings import load_settings
    from digitq.common.stack import LocalStack

    _show_local(LocalStack(load_settings()).down(), as_json)


@local_app.command("status")
@friendly_errors
def local_status(as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False):
    """Show whether the embedded stack runs, and where."""
    from digitq.common.settings import load_settings
    from digitq.common.stack import LocalStack

    _show_local(LocalStack(load_settings()).status(), as_json)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
