"""`submit-train`, `status`, `wait`, `jobs`, `cancel` against a stand-in Client: what reaches the
Client, what is refused before it (exit 2, one line), and what is printed."""

from __future__ import annotations

import json
import os

import pytest
import redis
import typer

from digitq.client.api import JobStatus
from digitq.client.cli import app
from digitq.common.errors import BrokerUnavailable, JobFailed, NoSuchJob
from digitq.common.schemas import TrainRequest, train_field
from tests.unit.cli_fake import JOB, cli  # noqa: F401  (the fixture)


def submitted(cli) -> TrainRequest:
    (request,), _ = cli.client.args_of("submit_train")
    return request


def test_submit_prints_the_job_id_and_sends_the_defaults(cli):
    r = cli("submit-train")
    assert r.exit_code == 0, r.output
    assert r.stdout == JOB + "\n"
    assert submitted(cli) == TrainRequest()


def test_every_option_reaches_the_request(cli, tmp_path):
    r = cli("submit-train", "--epochs", "7", "--arch", "seed-cnn", "--batch-size", "64", "--lr", "0.01",
            "--dropout", "0.3", "--conv-channels", "16, 32", "--dense-units", "256", "--seed", "4", "--name", "mine",
            "--dataset", str(tmp_path), "--validation-size", "100", "--train-size", "1000", "--test-size", "500",
            "--no-standardize", "--no-shuffle", "--schedule", "constant", "--label-smoothing", "0.05",
            "--save-every", "10", "--augment", "--ensemble", "3", "--precision", "mixed", "--jit", "--track-test")
    assert r.exit_code == 0, r.output
    assert submitted(cli) == TrainRequest(
        arch="seed-cnn", epochs=7, batch_size=64, learning_rate=0.01, dropout=0.3, conv_channels=[16, 32],
        dense_units=256, seed=4, name="mine", dataset=str(tmp_path), validation_size=100, train_size=1000,
        test_size=500, standardize=False, shuffle=False, schedule="constant", label_smoothing=0.05,
        save_every_batches=10, augment="affine", ensemble=3, precision="mixed", jit=True, track_test=True)


@pytest.mark.parametrize("args, augment", [([], None), (["--augment"], "affine"), (["--no-augment"], "none"),
                                           (["--elastic"], "elastic"), (["--augment", "--elastic"], "elastic")])
def test_augment_flags(cli, args, augment):
    assert cli("submit-train", *args).exit_code == 0
    assert submitted(cli).augment == augment


def test_a_relative_dataset_is_made_absolute_here(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli("submit-train", "--dataset", "digits").exit_code == 0
    assert submitted(cli).dataset == os.path.join(str(tmp_path), "digits")


@pytest.mark.parametrize("args, message", [
    (["--arch", "resnet"], "unknown arch 'resnet'"),
    (["--epochs", "0"], "epochs must be between 1"),
    (["--lr", "0"], "learning_rate must be > 0"),
    (["--lr", "-1"], "learning_rate must be > 0"),
    (["--dropout", "1.5"], "dropout must be between"),
    (["--name", "../etc"], "invalid model name"),
    (["--conv-channels", "32,x"], "--conv-channels takes whole numbers"),
    (["--elastic", "--no-augment"], "cannot go with --no-augment"),
    (["--schedule", "cosine"], "unknown schedule 'cosine'"),
    (["--label-smoothing", "0.9"], "label_smoothing must be between"),
    (["--precision", "half"], "unknown precision 'half'"),
    (["--parallel", "2"], "use it with --ensemble K"),
    (["--ensemble", "2", "--parallel", "65"], "--parallel must be between 0 and 64"),
])
def test_bad_input_is_one_line_and_exit_2_before_any_client(cli, args, message):
    r = cli("submit-train", *args)
    assert r.exit_code == 2
    assert r.stderr.startswith("error: ") and message in r.stderr and r.stderr.count("\n") == 1
    assert r.stdout == "" and cli.client.calls == []


def test_a_non_number_is_typers_usage_error(cli):
    r = cli("submit-train", "--epochs", "many")
    assert r.exit_code == 2 and "Invalid value" in r.stderr and cli.client.calls == []


def test_option_defaults_are_the_schemas():
    """The one source of defaults: each option that maps to a TrainRequest field defaults to it."""
    command = typer.main.get_command(app).commands["submit-train"]
    params = {p.name: p for p in command.params}
    renamed = {"lr": "learning_rate", "save_every": "save_every_batches"}
    for name, param in params.items():
        if name in ("wait", "as_json", "timeout", "elastic", "conv_channels", "augment", "parallel"):
            assert name in ("wait", "as_json", "timeout", "elastic", "parallel") or param.default is None
            continue
        assert param.default == train_field(renamed.get(name, name)).default, name
        assert train_field(renamed.get(name, name)).metadata["doc"] in param.help, name


def test_help_shows_the_architectures_defaults(cli):
    r = cli("submit-train", "--help")
    assert r.exit_code == 0
    text = " ".join(r.stdout.split()).replace("seed- cnn", "seed-cnn").replace("fast- cnn", "fast-cnn")  # click wraps at a hyphen
    assert "Label smoothing, 0 to 0.5. The model then never gets fully sure: with 0.1 a clean digit's confidence tops out near 93%. [default: the architecture's (fast-cnn 0.1, cnn 0.1, seed-cnn 0, mlp 0)]" in text
    assert "[default: the architecture's (fast-cnn 256, cnn 128, seed-cnn 50, mlp 128)]" in text


def test_wait_prints_the_result_table(cli):
    r = cli("submit-train", "--wait")
    assert r.exit_code == 0, r.output
    assert f"submitted {JOB}" in r.stderr
    out = r.stdout
    assert f"waiting for {JOB} ..." in out
    for text in ("digits:3 (cnn, 2 replica(s) on CPU x2)", "99.12%  (loss 0.0312)", "2  (55000 training images)",
                 "epoch 2", "(resumed)", "61.2 s", "/home/jobs/x/model.keras"):
        assert text in out, text


def test_json_implies_wait_and_prints_one_object(cli):
    r = cli("submit-train", "--json", "--timeout", "5")
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout)
    assert res["test_accuracy"] == 0.9912 and res["job_id"] == JOB and res["history"][1]["resumed"]
    assert cli.client.args_of("wait") == ((JOB,), {"timeout": 5.0})


def test_a_failed_job_is_one_line_exit_1(cli):
    cli.client.fail["wait"] = JobFailed(f"job {JOB} failed: ValueError: boom")
    r = cli("wait", JOB)
    assert r.exit_code == 1 and r.stderr.endswith("failed: ValueError: boom\n")


@pytest.mark.parametrize("exc, text, code", [
    (NoSuchJob("no job x"), "error: no job x\n", 2),
    (BrokerUnavailable("cannot reach the broker at redis://***@h:1/0: refused"), "error: cannot reach", 1),
    (redis.exceptions.ConnectionError("gone"), "error: broker unavailable: gone\n", 1),
    (KeyboardInterrupt(), "interrupted\n", 130),
])
def test_expected_failures_are_one_line(cli, exc, text, code):
    cli.client.fail["status"] = exc
    r = cli("status", JOB)
    assert r.exit_code == code and r.stderr.startswith(text) and "Traceback" not in r.output


def test_status_of_a_finished_training(cli):
    r = cli("status", JOB)
    assert r.exit_code == 0
    assert r.stdout.startswith(f"{JOB}  train  SUCCESS\n") and "99.12%" in r.stdout


def test_status_of_a_running_job_and_of_a_predict_batch(cli):
    cli.client.statuses["a"] = JobStatus("a", "PROGRESS", "train", progress={"epoch": 1, "batch": 5})
    cli.client.statuses["b"] = JobStatus("b", "SUCCESS", "predict", result={"classified": 3, "failed": 0})
    cli.client.statuses["c"] = JobStatus("c", "FAILURE", "train", error="DataError: no MNIST")
    assert cli("status", "a").stdout == "a  train  PROGRESS\n  epoch=1  batch=5\n"
    assert cli("status", "b").stdout == "b  predict  SUCCESS\n  classified=3  failed=0\n"
    assert cli("status", "c").stdout == "c  train  FAILURE\n  DataError: no MNIST\n"


def test_status_json(cli):
    d = json.loads(cli("status", JOB, "--json").stdout)
    assert d["state"] == "SUCCESS" and d["kind"] == "train" and d["model"] == "digits:3"


def test_jobs_table_and_json(cli):
    r = cli("jobs", "--limit", "5")
    assert r.exit_code == 0 and cli.client.args_of("jobs") == ((5,), {"kind": None})
    header = r.stdout.splitlines()[0]
    for column in ("job", "kind", "name", "state", "when", "result"):
        assert column in header
    assert JOB in r.stdout and "99.12%" in r.stdout and "queued" in r.stdout and "done" in r.stdout
    rows = json.loads(cli("jobs", "--json").stdout)
    assert [r["job_id"] for r in rows] == [JOB, "f" * 32] and "history" not in rows[0]


def test_cancel(cli):
    cli.client.statuses[JOB] = JobStatus(JOB, "PROGRESS", "train")
    r = cli("cancel", JOB)
    assert r.exit_code == 0 and r.stdout == f"cancelled {JOB}\n"


def test_missing_argument_is_a_usage_error(cli):
    for command in ("status", "wait", "cancel"):
        r = cli(command)
        assert r.exit_code == 2 and "Missing argument" in r.stderr


def test_no_arguments_shows_the_commands(cli):
    r = cli()
    assert r.exit_code == 2  # click's no_args_is_help
    for command in ("submit-train", "status", "wait", "jobs", "cancel", "worker", "predict", "evaluate", "report",
                    "workers", "logs", "tensorboard", "local", "models"):
        assert f"  {command} " in r.output, command


def test_parallel_reaches_the_client_with_the_ensemble(cli):
    assert cli("submit-train", "--ensemble", "3", "--parallel", "2").exit_code == 0
    (request,), kwargs = cli.client.args_of("submit_train")
    assert request.ensemble == 3 and kwargs == {"parallel": 2}


def test_an_ensembles_progress_shows_its_members_together():
    """The bar of an ensemble fanned out over the workers: who runs, the slowest member's epoch, and
    the batches done over all K members (digitq.common.ensemble.parent_progress)."""
    from rich.console import Console

    from digitq.client.progress import TrainProgress

    with TrainProgress(Console(file=open(os.devnull, "w"), width=120)) as bar:
        bar.update(JobStatus(JOB, "PENDING", progress={"phase": "queued", "ensemble": 3, "members_done": 0,
                                                        "running": []}))
        assert bar.progress.tasks[0].description == "queued"
        bar.update(JobStatus(JOB, "PROGRESS", progress={
            "phase": "train", "ensemble": 3, "members_done": 1, "running": [2, 3], "member": 2, "epoch": 1,
            "epochs": 2, "batch": 5, "batches": 10, "loss": 0.5, "completed_batches": 26, "total_batches": 60}))
        task = bar.progress.tasks[0]
        assert task.description == "members 2,3/3 epoch 1/2"
        assert (task.completed, task.total) == (26, 60)
        assert "1/3 done" in task.fields["detail"] and "loss 0.5000" in task.fields["detail"]
        bar.update(JobStatus(JOB, "PROGRESS", progress={"phase": "train", "ensemble": 3, "members_done": 2,
                                                         "running": [3], "member": 3, "epoch": 2, "epochs": 2}))
        assert bar.progress.tasks[0].description == "member 3/3 epoch 2/2"
