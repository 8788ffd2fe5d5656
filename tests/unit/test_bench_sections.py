"""Each benchmark section's run(), on a fake harness that replays what the committed bench/results/suite.json
recorded, rebuilds that result: the sections' bookkeeping, checked without training anything."""

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))  # where `python bench/suite.py` finds benchkit

from benchkit import cli, config  # noqa: E402
from benchkit.sections import ceiling, onednn, overhead, scaling, tta  # noqa: E402


@pytest.fixture(scope="module")
def recorded() -> dict:
    doc = json.loads((REPO / "bench" / "results" / "suite.json").read_text())
    return {name: {k: v for k, v in res.items() if k != "stamp"} for name, res in doc["results"].items()}


class FakeHarness:
    """The Harness methods a section calls, answering from recorded results instead of processes."""

    def __init__(self, args, tmp_path):
        self.args = args
        self.models: dict = {}
        self.warm = False
        self.machine = {"cpu": "test CPU", "cpu_isa": "none", "usable_cpus": 2}
        self.worker_log = tmp_path / "worker.log"  # never written: no timeline, as on a log-less worker
        self.calls: list = []

    def log(self, msg):
        pass

    def log_offset(self, path=None):
        return 0

    def ensure_warm(self):
        self.warm = True
        self.models.setdefault("warm", "warm:1")

    def local_down(self):
        self.warm = False


def _as_history(curve: list[dict]) -> list[dict]:
    return [dict(e) for e in curve]


def test_overhead_run_rebuilds_the_recorded_summary(recorded, tmp_path):
    rec = recorded["overhead"]
    runs = rec["runs"]
    h = FakeHarness(cli.parse_args(["--overhead-repeats", str(len(runs))]), tmp_path)
    h.args.data_args = rec["data_args"]
    tiny = iter([x for r in runs for x in (r["cold"]["first_job"], r["cold"]["warm_job"])])
    service, bare, ups = iter(r["service"] for r in runs), iter(r["bare"] for r in runs), iter(
        r["cold"]["local_up_seconds"] for r in runs)
    h.local_up = lambda: next(ups)
    h.service_train = lambda args, timeout=None: next(tiny) if "bench-warm" in args else next(service)
    h.bare_train = lambda args, extra_env=None: next(bare)

    got = overhead.run(h).to_dict()
    assert {k: v for k, v in got.items() if k not in ("summary", "runs")} == {
        k: v for k, v in rec.items() if k not in ("summary", "runs")}
    timed = ("cold",)  # the cold start is timed by the harness's own clock and the worker log
    assert {k: v for k, v in got["summary"].items() if k not in timed} == {
        k: v for k, v in rec["summary"].items() if k not in timed}
    assert got["summary"]["cold"]["local_up_seconds"] == rec["summary"]["cold"]["local_up_seconds"]
    assert [r["service"] for r in got["runs"]] == [r["service"] for r in runs]
    assert h.models["warm"] == runs[-1]["cold"]["warm_job"]["model"]


def test_tta_run_rebuilds_the_recorded_result(recorded, tmp_path):
    rec = recorded["tta"]
    cnn, seed = rec["jobs"]["cnn"], rec["jobs"]["seed-cnn"]
    args = cli.parse_args(["--cnn-epochs", str(cnn["epochs_requested"]), "--seed-epochs",
                           str(seed["epochs_requested"]), "--seed-target", str(rec["seed_target"])])
    args.data_args = rec["data_args"]
    h = FakeHarness(args, tmp_path)
    h.service_train = lambda argv, timeout=None: {
        "history": _as_history(cnn["curve"]), **{k: cnn[k] for k in (
            "job_id", "model", "test_accuracy", "wall_seconds", "client_seconds", "train_seconds", "train_images",
            "cpu")}}
    result = {} if seed["state"] == "REVOKED" else {
        k: seed[k] for k in ("model", "test_accuracy", "wall_seconds", "train_seconds")}
    h.service_train_to_target = lambda argv, target, epochs: {
        "history": _as_history(seed["curve"]), "result": result, **{k: seed.get(k) for k in (
            "job_id", "state", "stopped_at_target", "client_seconds", "seen_seconds", "cancel_seconds",
            "train_images", "cpu")}}

    assert tta.run(h).to_dict() == rec
    assert h.models["tta-cnn"] == cnn["model"]


def test_ceiling_run_with_reused_jobs_rebuilds_the_recorded_result(recorded, tmp_path):
    rec = recorded["ceiling"]
    jobs, members = rec["jobs"], rec["summary"]["members"]
    args = cli.parse_args(["--ceiling-job", ",".join(j["job_id"] for j in jobs)])
    args.data_args = rec["data_args"]
    h = FakeHarness(args, tmp_path)
    first = 0
    finished = {}
    for j in jobs:
        own = range(first + 1, first + j["k"] + 1)
        flags = dict(zip(j["model_flags"][::2], j["model_flags"][1::2]))
        request = {"ensemble": j["k"], "epochs": j["epochs"], "augment": j["augment"], "seed": j["seed"]}
        if "--conv-channels" in flags:
            request["conv_channels"] = [int(c) for c in flags["--conv-channels"].split(",")]
        finished[j["job_id"]] = {
            "job_id": j["job_id"], "request": request, "reused": j["reused"], "model": j["model"],
            "test_accuracy": j["test_accuracy"], "train_seconds": j["train_seconds"],
            "wall_seconds": j["wall_seconds"], "client_seconds": None, "cpu": None, "warnings": [],
            "train_images": rec["train_images"],
            "member_accuracies": [m["test_accuracy"] for m in members if m["member"] in own],
            "history": [{**e, "member": e["member"] - first} for e in rec["history"] if e["member"] in own]}
        first += j["k"]
    h.finished_job = finished.__getitem__
    ev, reg = rec["evaluate"], rec["registry"]

    def fake_cli(argv, check=True, timeout=None):
        h.calls.append(argv)
        if argv[:2] == ["models", "combine"]:
            out = f"registered {rec['model']}: the average of {rec['k']} networks"
        elif argv[0] == "evaluate":
            out = json.dumps({k: ev[k] for k in ("accuracy", "loss", "images", "dataset", "model")})
        else:
            out = json.dumps({**reg, "members": [f"m{i}" for i in range(reg["members"])]})
        return SimpleNamespace(stdout=out + "\n", returncode=0)

    h.cli = fake_cli
    got = ceiling.run(h).to_dict()
    got["evaluate"]["seconds"] = ev["seconds"]  # timed by the harness's clock
    assert got == rec
    assert h.calls[0] == rec["combine_argv"] and h.calls[1] == ev["argv"]


def test_onednn_run_rebuilds_the_recorded_result(recorded, tmp_path):
    rec = recorded["onednn"]
    repeats = len(rec["sides"]["0"]["runs"])
    h = FakeHarness(cli.parse_args(["--repeats", str(repeats), "--scale-images", str(rec["train_images"])]),
                    tmp_path)
    cpu, isa = rec["cpu"].rsplit(" (", 1)
    h.machine.update(cpu=cpu, cpu_isa=isa.rstrip(")"), tf_default_onednn=rec["tf_default"])
    runs = {v: iter(side["runs"]) for v, side in rec["sides"].items()}

    def bare_train(args, extra_env=None):
        r = next(runs[extra_env["TF_ENABLE_ONEDNN_OPTS"]])
        return {"steady_images_per_second": r["steady_images_per_second"], "onednn": r["onednn"], "cpu": r["cpu"],
                "history": [{"images_per_second": r["epoch_images_per_second"]}], "test_images": rec["test_images"],
                "phases_seconds": {"eval": r["eval_seconds"]}, "test_accuracy": r["test_accuracy"]}

    h.bare_train = bare_train
    assert onednn.run(h).to_dict() == rec
    assert all(next(it, None) is None for it in runs.values())  # every recorded run used, no more


def test_scaling_run_rebuilds_the_recorded_result(recorded, tmp_path):
    rec = recorded["scaling"]
    rep, wk = rec["replicas"], rec["workers"]
    repeats = len(rep["1"]["runs"])
    h = FakeHarness(cli.parse_args(["--repeats", str(repeats), "--scale-images", str(rec["train_images"])]),
                    tmp_path)
    replica_runs = {k: iter(side["runs"]) for k, side in rep.items()}
    worker_runs = {k: iter(side["runs"]) for k, side in wk.items()}
    consuming = {"w2@bench": True}

    def bare_train(args, extra_env=None):
        k = extra_env["DIGITQ_CPU_REPLICAS"]
        r = next(replica_runs[k])
        return {"steady_images_per_second": r["steady_images_per_second"], "process_seconds": r["process_seconds"],
                "history": [{"images_per_second": r["epoch_images_per_second"]}], "cpu": r["cpu"],
                "phases_seconds": {"fit": r["fit_seconds"]}, "global_batch": rep[k]["global_batch"],
                "replicas": rep[k]["replicas_seen"], "test_accuracy": rep[k]["test_accuracy"]}

    h.bare_train = bare_train
    h.start_w2 = lambda: ("w2@bench", "local@bench")
    h.stop_w2 = lambda: None
    h.consume = lambda node, on: consuming.__setitem__(node, on)
    h.service_train = lambda args, timeout=None: {"model": "warm:1"}
    h.concurrent_jobs = lambda n, args: next(worker_runs["2" if consuming["w2@bench"] else "1"])
    assert scaling.run(h).to_dict() == rec
    assert all(next(it, None) is None for it in [*replica_runs.values(), *worker_runs.values()])


def test_a_partial_rerun_keeps_the_others_and_survives_a_failing_section(recorded, tmp_path, monkeypatch):
    """`--only tta,queue` with tta replaying its recorded result and queue failing: the run goes on, exits 1,
    stops the stack, and suite.json and the report hold the new tta, the failure and every kept section."""
    from dataclasses import replace

    from benchkit import runner
    from benchkit.sections import SECTIONS

    out = tmp_path / "results"
    out.mkdir()
    committed = json.loads((REPO / "bench" / "results" / "suite.json").read_text())
    (out / "suite.json").write_text(json.dumps(committed))
    closed = []

    class Meter:
        def stop(self):
            return {"other_share": 0.0, "other_cpu_seconds": 0.0}

    class StubHarness:
        def __init__(self, args, out):
            self.machine, self.home, self.data_dir = dict(committed["machine"]), tmp_path, tmp_path

        log = staticmethod(lambda msg: None)

        def meter(self):
            return Meter()

        def close(self):
            closed.append(True)

    def fail(h):
        raise RuntimeError("the broker is gone")

    monkeypatch.setattr(runner, "Harness", StubHarness)
    replay = replace(SECTIONS["tta"], run=lambda h: tta.TtaResult.from_dict(recorded["tta"]))
    monkeypatch.setitem(SECTIONS, "tta", replay)
    monkeypatch.setitem(SECTIONS, "queue", replace(SECTIONS["queue"], run=fail))
    args = cli.parse_args(["--only", "tta,queue", "--out", str(out), "--plots", str(tmp_path / "plots"),
                           "--report", str(tmp_path / "BENCHMARKS.md")])
    assert runner.run_suite(args) == 1
    assert closed == [True]
    doc = json.loads((out / "suite.json").read_text())
    assert sorted(doc["results"]) == sorted(committed["results"])
    assert {k: v for k, v in doc["results"]["tta"].items() if k != "stamp"} == recorded["tta"]
    assert doc["results"]["tta"]["stamp"] != committed["results"]["tta"]["stamp"]  # stamped anew
    assert doc["results"]["queue"]["error"] == "RuntimeError: the broker is gone"
    assert doc["results"]["overhead"] == committed["results"]["overhead"]  # kept as it was
    text = (tmp_path / "BENCHMARKS.md").read_text()
    assert "the broker is gone" in text and "| kept from earlier runs | overhead (" in text


@pytest.mark.parametrize("quick", [False, True])
def test_ceiling_run_trains_one_job_and_evaluates_its_model(tmp_path, quick):
    args = cli.parse_args(["--ceiling-augment", "elastic", *(["--quick"] if quick else [])])
    h = FakeHarness(args, tmp_path)
    history = [{"epoch": 1, "seconds": 5.0, "train_elapsed": 5.0, "test_accuracy": acc, "member": m}
               for m, acc in ((1, 0.98), (2, 0.985))]
    trained = []

    def service_train(argv, timeout=None):
        trained.append(argv)
        return {"job_id": "j1", "model": "bench-ceiling:1", "test_accuracy": 0.99, "member_accuracies": [0.98, 0.985],
                "train_seconds": 10.0, "wall_seconds": 12.0, "client_seconds": 13.0, "train_images": 5000,
                "history": history, "warnings": [], "cpu": {"other_share": 0.0}}

    def fake_cli(argv, check=True, timeout=None):
        h.calls.append(argv)
        out = {"accuracy": 0.99, "loss": 0.1, "images": 2000, "dataset": "mnist-test", "model": "bench-ceiling:1"}
        return SimpleNamespace(stdout=json.dumps(out if argv[0] == "evaluate" else {"kind": "ensemble"}) + "\n")

    h.service_train, h.cli = service_train, fake_cli
    res = ceiling.run(h)
    k = args.ceiling_k
    assert trained == [["--augment", "--elastic", "--ensemble", str(k), "--epochs", str(args.ceiling_epochs),
                        "--track-test", *(config.QUICK_DATA if quick else ["--validation-size", "0"]),
                        "--name", "bench-ceiling"]]
    assert res.combine_argv is None and res.model == "bench-ceiling:1" and res.client_seconds == 13.0
    assert h.calls[0] == ["evaluate", "--model", "bench-ceiling:1", *(["--test-size", "2000"] if quick else []),
                          "--json"]
    assert res.summary["member_median"] == pytest.approx(0.9825) and res.augment == "elastic"


def test_queue_run_times_each_task_and_the_burst(tmp_path, monkeypatch):
    import digitq.client.api as api
    from benchkit.sections import queue

    sent = []

    class App:
        def send_task(self, name, args, queue):
            sent.append((name, args[0]["model"], queue))
            return SimpleNamespace(id=f"t{len(sent)}")

    client = SimpleNamespace(app=App(), wait_result=lambda task_id, timeout, poll: None)
    monkeypatch.setattr(api, "connect", lambda start_local=False: client)
    h = FakeHarness(cli.parse_args(["--queue-n", "4"]), tmp_path)
    res = queue.run(h)
    assert len(sent) == 3 + 3 * 4 and {s[1] for s in sent} == {"warm:1"}  # 3 untimed warm-ups first
    assert res.n == 4 and res.sequential_default_poll["n"] == res.sequential_fine_poll["n"] == 4
    assert res.burst["n"] == 4 and res.burst["worker_bound_jobs_per_second"] is None  # no worker log here
    assert sorted(res.to_dict()) == ["burst", "model", "n", "sequential_default_poll", "sequential_fine_poll"]
