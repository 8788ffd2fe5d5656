"""bench/gpu_check.py, the GPU check, on the CPU: its table and time keeping as pure functions,
and `--quick` end to end under Keras' JAX backend with TensorFlow blocked (as on the GPU machine)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from tests.unit.jax_env import HAVE_JAX, SKIP_REASON, run_without_tensorflow

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "bench" / "gpu_check.py"


def _load():
    spec = importlib.util.spec_from_file_location("bench_gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


gpu_check = _load()


def _run(epochs):
    run = gpu_check.RunResult(128, "float32", 3e-3, status="done")
    elapsed = 0.0
    for i, (seconds, accuracy) in enumerate(epochs, 1):
        elapsed += seconds
        run.epochs.append({"epoch": i, "seconds": seconds, "elapsed": elapsed, "test_accuracy": accuracy,
                           "eval_s": 0.1})
    return run


def test_time_to_accuracy_counts_training_seconds_until_the_first_epoch_that_reaches_it():
    run = _run([(9.0, 0.985), (1.0, 0.992), (1.2, 0.994), (1.1, 0.9951), (1.0, 0.9949)])
    assert run.time_to(0.990) == pytest.approx(10.0)
    assert run.time_to(0.995) == pytest.approx(12.3)
    assert run.time_to(0.999) is None
    assert run.steady_epoch_s == pytest.approx(1.1)  # the median after the first epoch
    assert run.compile_s == pytest.approx(7.9)  # first epoch minus that median
    row = run.to_dict(55000)
    assert row["train_images_per_s"] == pytest.approx(50000.0)
    assert row["final_test_accuracy"] == 0.9949


def test_the_table_marks_what_did_not_run():
    done = _run([(2.0, 0.991), (1.0, 0.996)])
    done.inference = {"1024": 123456.0}
    skipped = gpu_check.RunResult(2048, "bf16", 1.2e-2, status="skipped: time budget")
    report = {"device": {"backend": "gpu", "devices": ["NVIDIA H200"], "jax": "0.11.2", "keras": "3.15.1",
                         "keras_backend": "jax", "python": "3.12.3"},
              "config": {"arch": "cnn", "epochs": 2, "train_images": 55000, "test_images": 10000,
                         "infer_batches": [1024, 8192]},
              "runs": [done.to_dict(55000), skipped.to_dict(55000)], "budget_s": 240, "elapsed_s": 250.0,
              "complete": False, "stopped": "time budget"}
    table = gpu_check.format_table(report)
    lines = table.splitlines()
    assert "NVIDIA H200" in lines[0] and "KERAS_BACKEND=jax" in lines[0]
    assert lines[2].startswith("| batch | peak LR | precision | to 99.0% s | to 99.5% s |")
    assert lines[4] == ("| 128 | 0.003 | float32 | 2.0 | 3.0 | 0.9960 | 1.0 | 1.00 | 55,000 | 123,456 | - "
                        "| done |")
    assert lines[5].startswith("| 2048 | 0.012 | bf16 | - | - | - |") and lines[5].endswith("skipped: time budget |")
    assert lines[-1] == "elapsed 250 s of a 240 s budget (incomplete: time budget)"


def test_quick_is_one_small_configuration():
    args = gpu_check.parse_args(["--quick"])
    assert (args.train_size, args.test_size, args.epochs, args.batches, args.precisions, args.infer_batches) == (
        2000, 1024, 1, (256,), ("float32",), (1024,))
    args = gpu_check.parse_args([])
    assert args.batches == (256, 1024, 4096) and args.precisions == ("float32", "bf16")
    assert args.epochs is None  # the recipe's own


def test_the_larger_batches_scale_the_peak_learning_rate_by_the_square_root():
    class HP:
        learning_rate, batch_size = 3e-3, 128

    assert gpu_check.scaled_lr(HP, 128) == pytest.approx(3e-3)
    assert gpu_check.scaled_lr(HP, 512) == pytest.approx(6e-3)
    assert gpu_check.scaled_lr(HP, 2048) == pytest.approx(1.2e-2)


RUN_CHECK = f"""
import runpy, sys
sys.argv = [{str(SCRIPT)!r}, *sys.argv[1:]]
try:
    runpy.run_path({str(SCRIPT)!r}, run_name="__main__")
except SystemExit as exc:
    assert not exc.code, exc.code
print("tensorflow imported:", "tensorflow" in sys.modules)
"""


@pytest.mark.skipif(not HAVE_JAX, reason=SKIP_REASON)
def test_quick_check_trains_the_recipe_on_jax_and_writes_its_table(tmp_path, data_dir):
    out = tmp_path / "out"
    proc = run_without_tensorflow(RUN_CHECK, "--quick", "--mnist", str(data_dir / "mnist"), timeout=300,
                                  OUT=str(out))
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "| batch | peak LR | precision |" in proc.stdout
    assert proc.stdout.strip().endswith("tensorflow imported: False")
    report = json.loads((out / "gpu_check.json").read_text())
    assert report["device"]["keras_backend"] == "jax" and report["complete"]
    assert report["config"]["train_images"] == 2000 and report["config"]["test_images"] == 1024
    (run,) = report["runs"]
    assert (run["batch"], run["precision"], run["status"], len(run["epochs"])) == (256, "float32", "done", 1)
    assert 0.0 <= run["final_test_accuracy"] <= 1.0 and run["train_images_per_s"] > 0
    assert run["inference"]["1024"] > 0


@pytest.mark.skipif(not HAVE_JAX, reason=SKIP_REASON)
def test_the_check_stops_itself_at_its_budget_and_still_prints_the_table(tmp_path, data_dir):
    proc = run_without_tensorflow(RUN_CHECK, "--quick", "--epochs", "2", "--budget-s", "1", "--mnist",
                                  str(data_dir / "mnist"), "--out", str(tmp_path / "check.json"), timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads((tmp_path / "check.json").read_text())
    assert not report["complete"]
    # Training starts past the 1 s budget (imports take longer): its first step ends the epoch.
    assert report["runs"][0]["status"] == "interrupted in epoch 1 of 2: time budget"
    assert "| batch |" in proc.stdout and "(incomplete: time budget)" in proc.stdout
