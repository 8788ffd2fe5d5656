"""The `digitq` command line: Typer sub-apps, one module per concern, composed here.

Each command parses its options, calls digitq.client.api.Client (through `session.get_client`,
which tests replace), and formats what it returns (`output`). A command's docstring is its --help.

    train    submit-train, status, wait, jobs, cancel
    local    worker; local up|down|status
    predict  predict, evaluate, report
    ops      workers, logs, tensorboard
    models   models list|show|promote|delete|combine|export
    sweep    sweep; sweep status|wait|cancel
"""

from __future__ import annotations

import typer

from digitq.client.cli import local, models, ops, predict, sweep, train

app = typer.Typer(
    name="digitq",
    help="Train handwritten-digit classifiers and classify image folders through a Redis/Celery queue.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
# Top-level commands, in the order `digitq --help` lists them, then the command groups.
app.add_typer(train.app)
app.add_typer(local.commands)
app.add_typer(predict.app)
app.add_typer(ops.app)
app.add_typer(local.app, name="local")
app.add_typer(models.app, name="models")
app.add_typer(sweep.app, name="sweep")


def main() -> None:
    app()


__all__ = ["app", "main"]
