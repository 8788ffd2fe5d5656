"""Sweeps without workers: the search space's syntax and checks, bad input refused in one line
before any connection, the trials table's width, and the Optuna adapter the worker relies on."""

from __future__ import annotations

import json

import pytest
from rich.console import Console
from typer.testing import CliRunner

from digitq.client.cli import app, session
from digitq.client.cli.sweep import trials_table
from digitq.client.sweep import SweepStatus
from digitq.common.errors import InvalidRequest
from digitq.common.sweep import SweepRequest, make_sweep_request, parse_space


def test_param_strings_and_a_file_make_one_space_with_fixed_options():
    space, fixed = parse_space(["lr=loguniform:1e-4:1e-2", "bs=choice:64,128,256", "widths=choice:16-32,32-48",
                                "augment=none"],
                               json.dumps({"dropout": "uniform:0:0.5", "dense_units": {"type": "logint", "low": 16,
                                                                                       "high": 256}}))
    assert space["learning_rate"] == {"type": "loguniform", "low": "1e-4", "high": "1e-2"}
    assert set(space) == {"learning_rate", "batch_size", "conv_channels", "dropout", "dense_units"}
    assert fixed == {"augment": "none"}
    req = make_sweep_request(["lr=loguniform:1e-4:1e-2", "bs=choice:64,128", "widths=choice:16-32,32-48",
                              "augment=none", "epochs=int:2:6"], trials=20, parallel=4, name="s", train_size=5000)
    assert req.space["learning_rate"] == {"type": "loguniform", "low": 1e-4, "high": 1e-2}
    assert req.space["conv_channels"]["choices"] == [[16, 32], [32, 48]]
    assert req.base["augment"] == "none" and req.base["train_size"] == 5000 and req.max_epochs() == 6
    assert SweepRequest.from_dict(req.to_dict()) == req  # what the worker reads back from Redis


def test_a_yaml_space_file():
    pytest.importorskip("yaml")
    space, _ = parse_space(None, "lr: loguniform:1e-4:1e-2\nbatch_size: [32, 64]\n", "space.yaml")
    assert space == {"learning_rate": {"type": "loguniform", "low": "1e-4", "high": "1e-2"},
                     "batch_size": {"type": "choice", "choices": [32, 64]}}


BAD = [
    ([], "empty search space"),
    (["-p", "augment=none"], "empty search space"),
    (["-p", "lr"], "NAME=SPEC"),
    (["-p", "lr=loguniform:1e-4"], "two bounds"),
    (["-p", "lr=loguniform:0:1e-2"], "LO > 0"),
    (["-p", "lr=uniform:1e-2:1e-4"], "LO < HI"),
    (["-p", "lr=uniform:x:1"], "not a number"),
    (["-p", "dropout=uniform:0:2"], "dropout"),
    (["-p", "bs=choice:0,64"], "batch_size"),
    (["-p", "bs=choice:"], "at least one value"),
    (["-p", "seed=int:1:5"], "cannot be searched"),
    (["-p", "arch=choice:cnn,mlp"], "cannot be searched"),
    (["-p", "colour=choice:red"], "unknown training option"),
    (["-p", "lr=gaussian:1:2"], "not a number"),
    (["-p", "widths=choice:8-16-32"], "conv_channels"),
    (["-p", "lr=uniform:1e-4:1e-2", "--trials", "0"], "--trials"),
    (["-p", "lr=uniform:1e-4:1e-2", "--trials", "501"], "--trials"),
    (["-p", "lr=uniform:1e-4:1e-2", "--parallel", "0"], "--parallel"),
    (["-p", "lr=uniform:1e-4:1e-2", "--trials", "3", "--parallel", "4"], "cannot exceed"),
    (["-p", "lr=uniform:1e-4:1e-2", "--pruner", "fast"], "pruner"),
    (["-p", "lr=uniform:1e-4:1e-2", "--validation-size", "0"], "validation"),
]


@pytest.mark.parametrize("args,fragment", BAD, ids=[" ".join(a) or "nothing" for a, _ in BAD])
def test_bad_input_is_one_line_and_nothing_is_queued(monkeypatch, args, fragment):
    """Refused before the client is even made: nothing can have been queued."""
    made = []
    monkeypatch.setattr(session, "get_client", lambda quiet=False: made.append(1))
    res = CliRunner().invoke(app, ["sweep", *args])
    assert res.exit_code == 2, res.output
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], res.output
    assert not made


def test_a_malformed_space_file_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setattr(session, "get_client", lambda quiet=False: pytest.fail("connected"))
    f = tmp_path / "space.json"
    f.write_text("[1, 2]")
    res = CliRunner().invoke(app, ["sweep", "--space", str(f)])
    assert res.exit_code == 2 and res.output.startswith("error: ") and "object" in res.output, res.output
    f.write_text('{"lr": "loguniform:1e-4:1e-2", "seed": "choice:1,2"}')
    res = CliRunner().invoke(app, ["sweep", "--space", str(f)])
    assert res.exit_code == 2 and "seed cannot be searched" in res.output, res.output
    with pytest.raises(InvalidRequest, match="neither JSON nor YAML|not JSON"):
        parse_space(None, "lr: [unclosed", "s.yaml")


def test_the_trials_table_fits_80_columns():
    params = {"learning_rate": 0.000123456, "batch_size": 256, "conv_channels": [128, 256, 512], "dropout": 0.4321,
              "dense_units": 4096, "augment": "elastic", "schedule": "onecycle"}
    trials = [{"slot": i, "job_id": f"sweep-0123456789-{i}", "state": s, "epoch": 2, "epochs": 10,
               "val_accuracy": 0.98765, "params": params, "pruned_at": 2 if s == "pruned" else None}
              for i, s in enumerate(["complete", "pruned", "running", "queued", "failed", "cancelled"] * 17, 1)]
    st = SweepStatus("sweep-0123456789", "running", {"trials": 120, "parallel": 8, "pruner": "hyperband",
                                                     "base": {"epochs": 10}}, trials)
    console = Console(width=80, record=True)
    console.print(trials_table(st))
    text = console.export_text()
    assert all(len(line) <= 80 for line in text.splitlines()), text
    assert "pruned@2" in text and "100" in text and "lr=1.2e-04" in text


def test_optuna_trial_id_rebuilds_a_trial_in_another_process():
    """digitq.worker.compat.optuna_trial_id: a trial asked by one worker is reported to and pruned
    by another through Trial(study, trial_id)."""
    optuna = pytest.importorskip("optuna")
    from digitq.worker.compat import optuna_trial_id

    study = optuna.create_study(direction="maximize")
    asked = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    again = optuna.trial.Trial(study, optuna_trial_id(asked))
    again.report(0.5, 1)
    assert again.number == asked.number and study.trials[0].intermediate_values == {1: 0.5}


@pytest.mark.parametrize("pruner", ["asha", "hyperband", "median"])
def test_each_pruner_stops_a_trial_far_behind_the_others(pruner):
    """digitq.worker.sweep.make_pruner: steps are epochs; a trial well below the others at epoch
    1 is pruned there, by each of the pruners a user can choose (in-memory study, no Redis)."""
    optuna = pytest.importorskip("optuna")
    from digitq.worker.sweep import make_pruner

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    req = make_sweep_request(["lr=loguniform:1e-4:1e-2"], trials=12, parallel=2, pruner=pruner, epochs=9)
    study = optuna.create_study(study_name="sweep-test", direction="maximize", pruner=make_pruner(req),  # Hyperband brackets hash the name
                                sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(6):  # good trials, run to the end
        t = study.ask()
        for epoch in range(1, 10):
            t.report(0.9 + epoch / 100, epoch)
            assert not t.should_prune()  # as digitq's callback asks at every epoch (ASHA records its rungs)
        study.tell(t, 0.99)
    bad = study.ask()
    bad.report(0.2, 1)
    assert bad.should_prune()
    none = optuna.create_study(direction="maximize",
                               pruner=make_pruner(make_sweep_request(["lr=uniform:1e-4:1e-2"], pruner="none")))
    t = none.ask()
    t.report(0.0, 1)
    assert not t.should_prune()
