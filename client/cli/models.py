"""`digitq models ...`: the model registry (every successful training registers NAME:VERSION)."""

from __future__ import annotations

import datetime
from typing import Annotated

import typer
from rich.table import Column, Table

from digitq.client.cli import session
from digitq.client.cli.output import friendly_errors, line, out, pct, print_json

app = typer.Typer(help="The model registry: every successful training registers NAME:VERSION.",
                  no_args_is_help=True, rich_markup_mode=None)


def model_table(records: list[dict]) -> Table:
    """Fits 80 columns. `NAME` alone means the version marked in "used": promoted, else best."""
    t = Table("model", "arch", "accuracy", "used", Column("created", no_wrap=True), Column("job", no_wrap=True),
              box=None, pad_edge=False)
    for r in records:
        when = datetime.datetime.fromtimestamp(r.get("created", 0)).strftime("%b %d")
        used = "promoted" if r.get("promoted") else ("best" if r.get("default") else "")
        t.add_row(f"{r['name']}:{r['version']}", r.get("arch", ""), pct(r.get("test_accuracy")), used, when,
                  r.get("job_id", ""))
    return t


def _show_value(value) -> str:
    if isinstance(value, (list, tuple)):
        return ", ".join(map(str, value)) if value else "none"
    if isinstance(value, float):
        return f"{value:g}"
    if value is None:
        return "all"  # train_size, test_size: every image
    return str(value)


def record_lines(rec: dict) -> list[str]:
    """A model record as `key  value` lines, with the hyperparameters the worker actually used
    (the architecture's values where the request left them unset)."""
    from digitq.common.schemas import TrainRequest

    lines = [f"model          {rec['name']}:{rec['version']}" + ("  (promoted)" if rec.get("promoted") else "")]
    when = datetime.datetime.fromtimestamp(rec.get("created", 0)).strftime("%Y-%m-%d %H:%M")
    for key, label in (("arch", "arch"), ("kind", "kind"), ("dataset", "dataset"), ("job_id", "job"), ("path", "file")):
        if rec.get(key):
            lines.append(f"{label:<15}{rec[key]}")
    lines.append(f"{'created':<15}{when}")
    acc = rec.get("test_accuracy")
    loss = rec.get("test_loss")
    lines.append(f"{'test accuracy':<15}{pct(acc) or 'not scored'}" + (f"  (loss {loss:.4f})" if loss is not None else ""))
    if rec.get("combined_from"):
        lines.append(f"{'combined from':<15}{', '.join(rec['combined_from'])}  ({len(rec.get('members') or [])} networks)")
    hp = rec.get("hyperparameters") or {}
    try:
        hp = TrainRequest.from_dict(hp).effective() if "arch" in hp else hp
    except Exception:  # noqa: BLE001 - an older record: print what it holds
        pass
    if hp and "combined_from" not in hp:
        lines.append("hyperparameters")
        for key in sorted(hp):
            if key not in ("name", "dataset", "arch"):
                lines.append(f"  {key:<20}{_show_value(hp[key])}")
    return lines


@app.command("list")
@friendly_errors
def list_models(as_json: Annotated[bool, typer.Option("--json", help="Print a JSON list.")] = False):
    """Every registered model version, newest first per name."""
    records = session.get_client(quiet=True).list_models()
    print_json(records) if as_json else out.print(model_table(records))


@app.command("show")
@friendly_errors
def show(
    ref: Annotated[str, typer.Argument(help="NAME or NAME:VERSION.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the raw record as one JSON object.")] = False,
):
    """One model version's record: accuracy, dataset, file, and the hyperparameters it was
    trained with (the architecture's values where the request left them unset)."""
    rec = session.get_client(quiet=True).show_model(ref)
    if as_json:
        print_json(rec)
        return
    for text in record_lines(rec):
        line(text)


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
