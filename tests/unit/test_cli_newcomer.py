"""Issue 17, "the newcomer's list": each row as a test. Every refusal is one `error: ...` line
on stderr with the exit code of the README's rule (2: what was typed or set is wrong and nothing
was done; 1: it was tried and failed), and leaves no file and no open job behind.

Most run the CLI in-process (CliRunner) against the stand-in Client; those whose fault lives in
the real Client (settings, the output file, the predict batch's job) run it with a Client whose
broker calls are replaced, or with no broker at all."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from digitq.client.api import Client, JobStatus
from digitq.client.cli import app, session
from digitq.client.predict import Row
from digitq.common.errors import NoSuchModel
from digitq.common.registry import default_version
from digitq.common.schemas import PredictSummary
from digitq.common.stack import LocalStack, match_settings, worker_settings
from tests.unit.cli_fake import JOB, RECORD, cli  # noqa: F401  (the fixture)


def one_line(r, code: int, *fragments: str) -> str:
    """The run exited with `code`, printed no traceback, and stderr is one `error: ...` line."""
    assert r.exit_code == code, (r.exit_code, r.output, r.exception)
    assert "Traceback" not in r.output
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    for f in fragments:
        assert f in lines[0], lines[0]
    return lines[0]


def files_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.fixture
def env(tmp_path, monkeypatch):
    """A fresh DIGITQ_HOME and no broker: the real get_client, nothing started."""
    home = tmp_path / "home"
    monkeypatch.setenv("DIGITQ_HOME", str(home))
    monkeypatch.setenv("DIGITQ_DATA_DIR", str(tmp_path / "data"))
    for name in ("DIGITQ_BROKER_URL", "DIGITQ_RESULT_BACKEND"):
        monkeypatch.delenv(name, raising=False)
    return home


def run(*args: str, env: dict | None = None):
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "80", **(env or {})})


# --- tracebacks where the README promises one line ------------------------------------------


def test_an_output_in_a_missing_folder_is_refused_before_any_work(cli, tmp_path):
    r = cli("predict", str(tmp_path), "-o", "/nonexistent/dir/out.csv")
    one_line(r, 2, "the folder /nonexistent/dir does not exist")
    assert cli.client.calls == []


def test_an_output_or_gallery_in_a_read_only_folder_is_refused(cli, tmp_path, monkeypatch):
    ro = tmp_path / "ro"
    ro.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p) == ro else real_access(p, mode))
    one_line(cli("predict", str(tmp_path), "-o", str(ro / "q.csv")), 2, f"the folder {ro} is not writable")
    one_line(cli("predict", str(tmp_path), "--gallery", str(ro / "s.png")), 2, "--gallery", "is not writable")
    assert cli.client.calls == [] and files_in(ro) == []


@pytest.mark.parametrize("url, fragment", [
    ("not a url", "has no scheme"),
    ("http://127.0.0.1:6379/0", "scheme 'http'"),
    ("redis://:x@127.0.0.1:notaport/0", "not a usable Redis URL"),
    ("redis://127.0.0.1:99999/0", "not a usable Redis URL"),
])
def test_a_malformed_broker_url_is_one_line_exit_2(env, url, fragment):
    line = one_line(run("jobs", env={"DIGITQ_BROKER_URL": url}), 2, "DIGITQ_BROKER_URL", fragment)
    assert ":x@" not in line  # a password is never shown


def test_a_digitq_home_that_is_a_file_or_unusable_is_one_line(env, tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    one_line(run("jobs", env={"DIGITQ_HOME": str(afile)}), 2, f"DIGITQ_HOME {afile} is not a folder")
    one_line(run("jobs", env={"DIGITQ_HOME": str(afile / "below")}), 1, "the embedded stack cannot use",
             "DIGITQ_HOME")


# --- files left behind, jobs left open ----------------------------------------------------------


def test_a_broker_error_leaves_no_partial_file(env, tmp_path):
    """A closed port: the error, and nothing written next to the output (no .wp.csv.partial)."""
    scans, out = tmp_path / "scans", tmp_path / "out"
    scans.mkdir()
    out.mkdir()
    (scans / "a.png").write_bytes(b"not really")
    r = run("predict", str(scans), "-o", str(out / "wp.csv"), "--jobs", "1",
            env={"DIGITQ_BROKER_URL": "redis://:pw@127.0.0.1:1/0"})
    one_line(r, 1, "cannot reach the broker at redis://***@127.0.0.1:1/0")
    assert files_in(out) == []


class StubClient(Client):
    """A real Client whose broker calls are replaced: the model, the rows, and the job's end."""

    def __init__(self, rows, **kw):
        super().__init__("redis://:pw@127.0.0.1:1/0", **kw)
        self.rows, self.finished = rows, []

    def show_model(self, ref):
        return dict(RECORD)

    def predict_rows(self, folder, model="digits", **options):
        options["on_model"]({"model": "digits:3"})
        yield from self.rows

    def finish_job(self, job_id, state, result):
        self.finished.append((job_id, state, result))


def _rows():
    import numpy as np

    pixels = np.zeros((28, 28), np.uint8)
    return [Row("a.png", [0.05] * 9 + [0.55], None, pixels), Row("b.txt", None, "not an image file")]


def test_a_gallery_that_cannot_be_written_fails_the_batch_and_leaves_nothing(tmp_path, monkeypatch):
    """The CSV is not left behind, and the batch's job is closed as FAILURE (never PENDING)."""
    from digitq.client.gallery import ContactSheet

    def refuse(self, path):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(ContactSheet, "save", refuse)
    client = StubClient(_rows())
    monkeypatch.setattr(session, "get_client", lambda quiet=False: client)
    monkeypatch.setattr(Client, "connect", lambda self: self)
    r = run("predict", str(tmp_path), "-o", str(tmp_path / "p.csv"), "--gallery", str(tmp_path / "s.png"),
            "--jobs", "1")
    one_line(r, 1, f"cannot write the gallery {tmp_path / 's.png'}: Permission denied")
    assert files_in(tmp_path) == []
    assert [state for _, state, _ in client.finished] == ["FAILURE"]


def test_an_output_that_cannot_be_opened_is_one_line_and_closes_the_batch(tmp_path, monkeypatch):
    import digitq.client.predict as predict_module

    def refuse(*a, **k):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(predict_module, "open", refuse, raising=False)
    client = StubClient(_rows())
    with pytest.raises(Exception) as exc:
        client.predict(str(tmp_path), output=str(tmp_path / "p.csv"))
    assert str(exc.value) == f"cannot write {tmp_path / 'p.csv'}: Permission denied"
    assert files_in(tmp_path) == [] and [s for _, s, _ in client.finished] == ["FAILURE"]


def test_a_good_run_names_the_model_version_it_used(tmp_path):
    """Friction 2: the summary (and so --json and the batch's result) says which version."""
    client = StubClient(_rows())
    summary = client.predict(str(tmp_path), output=str(tmp_path / "p.csv"))
    assert summary.model == "digits:3" and summary.to_dict()["model"] == "digits:3"
    assert files_in(tmp_path) == ["p.csv"] and client.finished[-1][1] == "SUCCESS"


# --- refused too late, or not at all --------------------------------------------------------------


@pytest.mark.parametrize("args, fragment", [
    (["--conv-channels", "32,64,128"], "conv_channels for fast-cnn takes 2 numbers (one per stage), got 3: 32,64,128"),
    (["--arch", "cnn", "--conv-channels", "32,64"], "conv_channels for cnn takes 3 numbers (one per stage), got 2: 32,64"),
    (["--arch", "seed-cnn", "--conv-channels", "8,16,32"], "conv_channels for seed-cnn takes 2 numbers"),
    (["--arch", "mlp", "--conv-channels", "8"], "mlp has no conv stages"),
    (["--timeout", "-5", "--wait"], "--timeout must be a number of seconds > 0, got -5"),
    (["--timeout", "0", "--wait"], "--timeout must be a number of seconds > 0, got 0"),
])
def test_training_options_refused_before_queueing(cli, args, fragment):
    one_line(cli("submit-train", *args), 2, fragment)
    assert cli.client.calls == []


@pytest.mark.parametrize("dataset, fragment", [
    ("/etc", "outside the worker's allowed roots"),
    ("/nonexistent/digits", "path '/nonexistent/digits' does not exist"),
])
def test_a_dataset_outside_the_roots_or_missing_is_refused_with_the_right_reason(env, dataset, fragment):
    r = run("submit-train", "--dataset", dataset, "--epochs", "1")
    one_line(r, 2, fragment)
    assert not (env / "local").exists(), "nothing was started"


def test_wait_timeout_and_jobs_limit_must_be_positive(cli):
    one_line(cli("wait", JOB, "--timeout", "-5"), 2, "--timeout must be")
    for limit in ("0", "-1", "10001"):
        one_line(cli("jobs", "--limit", limit), 2, "--limit must be between 1 and 10000")
    one_line(cli("jobs", "--kind", "sweep"), 2, "--kind must be train or predict")
    assert cli.client.calls == []


def test_a_broker_that_needs_a_password_says_so(env, monkeypatch):
    import redis

    def refuse(self):
        raise redis.exceptions.AuthenticationError(
            "HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH "
            "<user> <pass> option can be used to authenticate the client and select the RESP protocol version "
            "at the same time")

    monkeypatch.setattr(redis.Redis, "ping", refuse)
    r = run("jobs", env={"DIGITQ_BROKER_URL": "redis://127.0.0.1:6390/0"})
    one_line(r, 1, "the broker at redis://127.0.0.1:6390/0 needs a password", "redis://:PASSWORD@")


class CombinedClient(Client):
    def show_model(self, ref):
        return {"name": "ensemble", "version": 1, "kind": "ensemble", "job_id": "combine-" + "a" * 32,
                "combined_from": ["digits:1", "digits:2"], "members": ["/a", "/b"]}


def test_tensorboard_and_report_of_a_combined_model_say_it_has_none(env, monkeypatch):
    client = CombinedClient("redis://:pw@127.0.0.1:1/0")
    monkeypatch.setattr(session, "get_client", lambda quiet=False: client)
    text = "ensemble:1 is a combined model (of digits:1, digits:2): it has no"
    one_line(run("tensorboard", "ensemble:1"), 2, text, "training logs")
    one_line(run("report", "ensemble:1", "-o", str(env.parent / "r")), 2, text, "report")
    assert not (env.parent / "r").exists()


# --- frictions ----------------------------------------------------------------------------------


def test_the_embedded_worker_is_restarted_with_the_settings_of_a_command_that_queues_work(env, tmp_path, monkeypatch):
    """Friction 1: a worker started by `digitq jobs` without DIGITQ_DATA_DIR, then a submit with it."""
    from digitq.common.settings import load_settings

    old = load_settings()
    monkeypatch.setenv("DIGITQ_DATA_DIR", str(tmp_path / "elsewhere"))
    new = load_settings()
    stack = LocalStack(new)
    monkeypatch.setattr(LocalStack, "running_settings", lambda self: worker_settings(old))
    diff = stack.settings_mismatch()
    assert diff == [f"DIGITQ_DATA_DIR={old.data_dir} (this command: {new.data_dir})"]

    started = []
    monkeypatch.setattr(LocalStack, "up", lambda self, worker=True: started.append(self.settings.data_dir))
    monkeypatch.setattr(LocalStack, "worker_job", lambda self: None)
    assert match_settings(new) == f"restarted the embedded worker with this command's settings: {diff[0]}"
    assert started == [new.data_dir]

    monkeypatch.setattr(LocalStack, "worker_job", lambda self: JOB)  # busy: explain, restart nothing
    with pytest.raises(Exception, match=f"runs job {JOB} with other settings.*`digitq local up`"):
        match_settings(new)
    assert started == [new.data_dir]
    monkeypatch.setattr(LocalStack, "running_settings", lambda self: worker_settings(new))
    assert match_settings(new) is None


def test_name_alone_resolves_to_the_promoted_else_the_best_scoring_version():
    """Friction 2: a newer quick experiment does not take over from a better model."""
    def rec(acc):
        return json.dumps({"test_accuracy": acc}).encode()

    versions = {b"1": rec(0.9939), b"2": rec(0.934), b"3": rec(None)}
    assert default_version(versions, None) == 1
    assert default_version(versions, 2) == 2  # promoted wins
    assert default_version({**versions, b"4": rec(0.9939)}, None) == 4  # the newest of equals
    assert default_version({b"1": rec(None), b"2": rec(None)}, None) == 2  # none scored: the newest
    assert default_version(versions, 9) == 1  # a promoted version since deleted


def test_predict_summary_and_json_name_the_model_version(cli, tmp_path):
    cli.client.summary = PredictSummary(job_id=JOB, classified=2, failed=1, output="p.csv", seconds=0.5,
                                        images_per_second=6.0, model="digits:1")
    r = cli("predict", str(tmp_path), "-o", "p.csv", "--jobs", "1")
    assert r.exit_code == 0 and "2 classified, 1 failed -> p.csv (6 images/s)\nmodel used: digits:1\n" in r.stderr
    assert json.loads(cli("predict", str(tmp_path), "--json", "--jobs", "1").stdout)["model"] == "digits:1"


def test_tables_fit_80_columns_with_short_states(cli):
    """Friction 3: no SUCCE..., FAILU..., 2026-...; a filter by kind."""
    cli.client.statuses[JOB] = JobStatus(JOB, "FAILURE", "train", "digits", 1_700_000_000.0, error="x")
    for args in (["jobs"], ["evaluate"], ["models", "list"]):
        r = cli.runner.invoke(app, args, env={"COLUMNS": "80"})
        assert r.exit_code == 0, r.output
        assert max(len(line) for line in r.stdout.splitlines()) <= 80, r.stdout
        assert "…" not in r.stdout and "..." not in r.stdout, r.stdout
    assert "failed" in cli.runner.invoke(app, ["jobs"], env={"COLUMNS": "80"}).stdout
    del cli.client.statuses[JOB]
    r = cli.runner.invoke(app, ["jobs", "--kind", "train"], env={"COLUMNS": "80"})
    assert [k for n, _, k in cli.client.calls if n == "jobs"][-1] == {"kind": "train"}
    assert "predict" not in r.stdout and "done" in r.stdout


def test_cancel_says_what_happened(cli):
    """Friction 6: not the state before cancelling; a finished job is not 'cancelled'."""
    cli.client.statuses[JOB] = JobStatus(JOB, "PROGRESS", "train")
    cli.client.cancel = lambda job_id: JobStatus(job_id, "PROGRESS", "train")
    r = cli("cancel", JOB)
    assert r.exit_code == 0 and r.stdout.startswith(f"cancelling {JOB}: its worker stops it within seconds")
    cli.client.statuses[JOB] = JobStatus(JOB, "SUCCESS", "train")
    one_line(cli("cancel", JOB), 1, f"job {JOB} already ended (done): nothing to cancel")
    cli.client.statuses[JOB] = JobStatus(JOB, "REVOKED", "train")
    r = cli("cancel", JOB)
    assert r.exit_code == 0 and r.stdout == f"{JOB} was already cancelled\n"


def test_ctrl_c_while_waiting_says_the_job_keeps_running(cli):
    def interrupted(job_id, on_progress=None, timeout=None):
        raise KeyboardInterrupt

    cli.client.wait = interrupted
    r = cli("submit-train", "--wait")
    assert r.exit_code == 130
    assert f"job {JOB} keeps running: `digitq wait {JOB}` to follow it again, `digitq cancel {JOB}` to stop it" in r.stderr


def test_an_error_before_the_first_row_prints_no_progress_line(cli, tmp_path):
    """Friction 7: the error is the only line."""
    cli.client.fail["predict"] = NoSuchModel("no model named 'nope' (see `digitq models list`)")
    r = cli("predict", str(tmp_path), "--model", "nope", "--jobs", "1")
    assert r.stderr == "error: no model named 'nope' (see `digitq models list`)\n" and r.stdout == ""


def test_logs_of_a_failed_job_say_why(cli):
    """Friction 10: not nothing with exit 0."""
    cli.client.log_lines = []
    cli.client.statuses[JOB] = JobStatus(JOB, "FAILURE", "train", error="DataError: MNIST file missing")
    r = cli("logs", JOB)
    assert r.exit_code == 0 and r.stdout == ""
    assert r.stderr == f"job {JOB} failed before its worker logged anything: DataError: MNIST file missing\n"


def test_a_folder_of_only_sub_folders_suggests_recursive(tmp_path):
    from digitq.client.predict import predict_folder

    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.png").write_bytes(b"x")
    with pytest.raises(Exception, match=r"holds no files, only 1 sub-folder\(s\) \(e.g. a\); add --recursive"):
        list(predict_folder(StubClient([]), str(tmp_path), "digits", processes=1))


@pytest.mark.parametrize("args, code", [
    (["predict", ".", "--format", "xml"], 2),
    (["predict", ".", "--chunk-size", "0"], 2),
    (["predict", ".", "--jobs", "-1"], 2),
    (["predict", ".", "--gallery", "/no/such/s.png"], 2),
    (["predict", ".", "--model", "bad/name"], 2),
    (["submit-train", "--epochs", "0"], 2),
    (["jobs", "--limit", "0"], 2),
])
def test_one_exit_code_rule_usage_errors_exit_2(cli, args, code):
    """Friction 11: what was typed is wrong and nothing was done -> 2."""
    r = cli(*args)
    assert r.exit_code == code, r.output
    assert r.stderr.startswith("error: ") or "Usage" in r.stderr


def test_a_predict_chunk_is_one_short_line_in_worker_log():
    """Friction 12: counts, not 5,000 probability lists."""
    from digitq.worker.tasks import chunk_summary

    import numpy as np

    from digitq.common.schemas import PredictResult

    result = {"model": "digits:1", "probs": [[0.1] * 10] * 500, "errors": [None] * 499 + ["unreadable"]}
    assert chunk_summary(result) == "500 image(s), 1 error(s), model digits:1"
    packed = PredictResult.packing("digits:1", np.full((499, 10), 0.1), [None] * 499 + ["unreadable"]).to_dict()
    assert chunk_summary(packed) == "500 image(s), 1 error(s), model digits:1"  # the same line when packed


def test_a_full_volume_says_so_in_words_whatever_library_hit_it():
    """h5py's ENOSPC text ("Can't synchronously write data") names neither the disk nor the cause."""
    from digitq.worker.tasks import one_line as job_error_line

    h5py_text = OSError(28, "Can't synchronously write data (file write failed: time = Thu)\nmore lines")
    assert job_error_line(h5py_text).startswith("No space left on device (the shared volume is full): OSError:")
    assert "\n" not in job_error_line(h5py_text)
    assert job_error_line(OSError(28, "No space left on device")) == "OSError: [Errno 28] No space left on device"
    assert job_error_line(KeyError("x")) == "KeyError: 'x'"


def test_any_path_the_system_refuses_is_one_line_not_a_traceback(cli, tmp_path):
    """The backstop behind the specific checks: an OSError nothing else caught."""
    cli.client.fail["list_models"] = PermissionError(13, "Permission denied", "/srv/digitq/x")
    one_line(cli("models", "list"), 1, "error: Permission denied: /srv/digitq/x")


def test_the_restart_note_says_why_in_words():
    from digitq.common.stack import _origin, _why_stale

    prefix, root, _ = _origin().split(" ")
    assert _why_stale(f"{prefix} {root} 1") == "digitq's code changed since it started (a reinstall or an edit)"
    assert _why_stale("/other/venv /other/digitq 5") == "it ran the digitq in /other/digitq (Python /other/venv)"
    assert _why_stale("an older digitq") == "it ran an older digitq"
