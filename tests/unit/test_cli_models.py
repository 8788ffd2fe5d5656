"""`digitq models ...` against a stand-in Client."""

from __future__ import annotations

import json

from digitq.common.errors import InvalidRequest, NoSuchModel
from tests.unit.cli_fake import JOB, RECORD, cli  # noqa: F401  (the fixture)


def test_list_table_and_json(cli):
    cli.client.records.append({**RECORD, "version": 2, "promoted": False, "test_accuracy": None})
    r = cli("models", "list")
    assert r.exit_code == 0, r.output
    header = r.stdout.splitlines()[0]
    for column in ("model", "arch", "accuracy", "used", "created", "job"):
        assert column in header
    rows = [line for line in r.stdout.splitlines() if "digits:" in line]
    assert "99.12%" in rows[0] and "promoted" in rows[0] and JOB in rows[0]
    assert "%" not in rows[1] and "promoted" not in rows[1]
    assert json.loads(cli("models", "list", "--json").stdout) == cli.client.records


def test_show_prints_the_record_as_json(cli):
    r = cli("models", "show", "digits", "--json")
    assert r.exit_code == 0 and json.loads(r.stdout) == RECORD and cli.client.args_of("show_model")[0] == ("digits",)


def test_show_prints_the_hyperparameters_actually_used(cli):
    """Issue 17, friction 4: one line per value, the architecture's values instead of nulls."""
    cli.client.records[0] = {**RECORD, "test_loss": 0.0312, "dataset": "mnist",
                             "hyperparameters": {"arch": "cnn", "epochs": 2, "batch_size": None, "learning_rate": None,
                                                 "label_smoothing": None, "conv_channels": None, "name": "digits"}}
    r = cli("models", "show", "digits")
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert lines[0] == "model          digits:3  (promoted)"
    assert "test accuracy  99.12%  (loss 0.0312)" in lines
    for expected in ("  batch_size          128", "  learning_rate       0.003", "  label_smoothing     0.1",
                     "  conv_channels       32, 64, 128", "  epochs              2"):
        assert expected in lines, (expected, lines)
    assert "null" not in r.stdout and "None" not in r.stdout and max(map(len, lines)) <= 80


def test_promote_and_delete(cli):
    assert cli("models", "promote", "digits:3").stdout == "digits -> digits:3\n"
    assert cli("models", "delete", "digits:3").stdout == "deleted digits:3\n"
    assert cli.client.names() == ["promote_model", "delete_model"]


def test_refusals_from_the_registry_are_one_line(cli):
    cli.client.fail["promote_model"] = InvalidRequest("promote needs NAME:VERSION, got 'digits'")
    r = cli("models", "promote", "digits")
    assert r.exit_code == 2 and r.stderr == "error: promote needs NAME:VERSION, got 'digits'\n"
    cli.client.fail["delete_model"] = NoSuchModel("model 'digits' has no version 9 (see `digitq models list`)")
    r = cli("models", "delete", "digits:9")
    assert r.exit_code == 2 and "has no version 9" in r.stderr


def test_combine_with_and_without_evaluation(cli):
    r = cli("models", "combine", "a:1", "b:2", "--name", "ens")
    assert r.exit_code == 0, r.output
    assert cli.client.args_of("combine_models") == ((["a:1", "b:2"],), {"name": "ens", "evaluate": True})
    assert r.stdout == ("registered ens:1: the average of 3 networks from a:1, b:2; "
                        "MNIST test accuracy 99.51% (loss 0.0200)\n")
    r = cli("models", "combine", "a:1", "b:2", "--no-evaluate")
    assert r.stdout == "registered ensemble:1: the average of 3 networks from a:1, b:2\n"


def test_export(cli, tmp_path):
    r = cli("models", "export", "digits", str(tmp_path / "saved"))
    assert r.exit_code == 0, r.output
    assert r.stdout == f"exported digits:3 to {tmp_path / 'saved'}\n"


def test_models_without_a_subcommand_shows_its_commands(cli):
    r = cli("models")
    for command in ("list", "show", "promote", "delete", "combine", "export"):
        assert f"  {command} " in r.output
