"""`digitq models ...`: the model registry (every successful training registers NAME:VERSION)."""

from __future__ import annotations

import datetime
from typing import Annotated

import typer
from rich.table import Table

from digitq.client.cli import session
from digitq.client.cli.output import friendly_errors, line, out, pct, print_json

app = typer.Typer(help="The model registry: every successful training registers NAME:VERSION.",
                  no_args_is_help=True, rich_markup_mode=None)


def model_table(records: list[dict]) -> Table:
    t = Table("model", "arch", "test accuracy", "promoted", "created", "job")
    for r in records:
        when = datetime.datetime.fromtimestamp(r.get("created", 0)).strftime("%Y-%m-%d %H:%M")
        t.add_row(f"{r['name']}:{r['version']}", r.get("arch", ""), pct(r.get("test_accuracy")),
                  "yes" if r.get("promoted") else "", when, r.get("job_id", ""))
    return t


@app.command("list")
@friendly_errors
def list_models(as_json: Annotated[bool, typer.Option("--json", help="Print a JSON list.")] = False):
    """Every registered model version, newest first per name."""
    records = session.get_client(quiet=True).list_models()
    print_json(records) if as_json else out.print(model_table(records))


@app.command("show")
@friendly_errors
def show(ref: Annotated[str, typer.Argument(help="NAME or NAME:VERSION.")]):
    """One model version's record (JSON): hyperparameters, dataset, accuracy, file."""
    print_json(session.get_client(quiet=True).show_model(ref))


@app.command("promote")
@friendly_errors
def promote(ref: Annotated[str, typer.Argument(help="NAME:VERSION to make NAME resolve to.")]):
    """Make NAME (without a version) resolve to this version."""
    rec = session.get_client(quiet=True).promote_model(ref)
    line(f"{rec['name']} -> {rec['name']}:{rec['version']}")


@app.command("delete")
@friendly_errors
def delete(ref: Annotated[str, typer.Argument(help="NAME:VERSION to remove from the registry.")]):
    """Remove a version from the registry (the job's files stay on the shared volume)."""
    rec = session.get_client(quiet=True).delete_model(ref)
    line(f"deleted {rec['name']}:{rec['version']}")


@app.command("combine")
@friendly_errors
def combine(
    refs: Annotated[list[str], typer.Argument(help="Two or more models (NAME or NAME:VERSION) to average.")],
    name: Annotated[str, typer.Option(help="Register the combination under this name.")] = "ensemble",
    evaluate: Annotated[bool, typer.Option(help="Score it on the MNIST test set through the queue and store the accuracy in its record.")] = True,
):
    """Register the average of several models as a new ensemble version (e.g. K jobs trained in
    parallel, or different recipes). Each network weighs the same; predict and evaluate use it
    like any other model."""
    rec = session.get_client(quiet=True).combine_models(refs, name=name, evaluate=evaluate)
    text = (f"registered {rec['name']}:{rec['version']}: the average of {len(rec['members'])} networks "
            f"from {', '.join(rec['combined_from'])}")
    if evaluate:
        text += f"; MNIST test accuracy {pct(rec['test_accuracy'])} (loss {rec['test_loss']:.4f})"
    line(text)


@app.command("export")
@friendly_errors
def export(
    ref: Annotated[str, typer.Argument(help="NAME or NAME:VERSION.")],
    directory: Annotated[str, typer.Argument(help="Where to write the SavedModel (must not exist yet).")],
):
    """Write a TensorFlow SavedModel with a serving signature (for TensorFlow Serving).

    Runs here: needs digitq[worker] and the shared volume mounted at DIGITQ_HOME.
    """
    rec, path = session.get_client(quiet=True).export_model(ref, directory)
    line(f"exported {rec['name']}:{rec['version']} to {path}")
