"""bench/benchkit's pure parts: time-to-accuracy bookkeeping, overhead pair ratios, the ceiling summary,
the stamps that let a partial rerun keep the other results, and bench/suite.py's options. Nothing is run
or trained."""

import json
import math
import sys
from argparse import Namespace
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))  # where `python bench/suite.py` finds benchkit

from benchkit import cli, config, recipes, report, stamps, stats, store, worklog  # noqa: E402
from benchkit.section import Context  # noqa: E402
from benchkit.sections import BENCHMARKS, ceiling, onednn  # noqa: E402


def _hist(*accs, seconds=60.0):
    return [{"epoch": i + 1, "seconds": seconds, "train_elapsed": seconds * (i + 1), "test_accuracy": a}
            for i, a in enumerate(accs)]


def test_parse_args_defaults_and_quick():
    a = cli.parse_args([])
    assert (a.seed_epochs, a.seed_target, a.cnn_epochs) == (30, 0.994, 5)
    assert (a.overhead_repeats, a.repeats, a.ceiling_k, a.ceiling_epochs) == (5, 3, 5, 20)
    assert a.selected == list(BENCHMARKS)
    q = cli.parse_args(["--quick"])
    assert (q.ceiling_k, q.ceiling_epochs, q.seed_epochs, q.repeats) == (2, 1, 2, 1)
    assert q.data_args == config.QUICK_DATA
    only = cli.parse_args(["--only", "scaling,ceiling", "--overhead-repeats", "7"])
    assert only.selected == ["ceiling", "scaling"]  # run order
    assert only.overhead_repeats == 7


@pytest.mark.parametrize("argv", [["--seed-target", "1.5"], ["--seed-target", "0"], ["--ceiling-k", "0"],
                                  ["--only", "nope"], ["--overhead-repeats", "0"]])
def test_parse_args_refuses_bad_values(argv):
    with pytest.raises(SystemExit):
        cli.parse_args(argv)


def test_thresholds_include_the_target():
    assert config.SEED_TARGET in config.THRESHOLDS
    assert list(config.THRESHOLDS) == sorted(config.THRESHOLDS)


def test_first_reaching_counts_an_exact_hit():
    h = _hist(0.98, 9939 / 10000, 9940 / 10000, 0.996)
    assert stats.first_reaching(h, 0.994)["epoch"] == 3
    assert stats.first_reaching(h, 0.997) is None
    assert stats.first_reaching([{"epoch": 1}], 0.5) is None  # no tracked accuracy


def test_reached_thresholds():
    r = stats.reached_thresholds(_hist(0.986, 0.991, 0.9945), config.THRESHOLDS)
    assert r["0.985"] == {"seconds": 60.0, "epoch": 1}
    assert r["0.990"]["epoch"] == 2
    assert r["0.993"]["epoch"] == r["0.994"]["epoch"] == 3
    assert r["0.995"] is None


def _job(hist):
    return {"reached": stats.reached_thresholds(hist, config.THRESHOLDS), "epochs": len(hist),
            "train_seconds": hist[-1]["train_elapsed"]}


def test_tta_goal_met_and_not_met():
    cnn = _job(_hist(0.99, 0.995, seconds=30))  # 99.4% after 60 s
    fast_seed = _job(_hist(*[0.99] * 5, 0.994))  # after 360 s: 6x
    slow_seed = _job(_hist(*[0.99] * 10, 0.994))  # after 660 s: 11x
    g = stats.tta_goal(cnn, fast_seed, 0.994)
    assert g["status"] == "NOT met" and g["ratio"] == pytest.approx(6.0) and not g["lower_bound"]
    g = stats.tta_goal(cnn, slow_seed, 0.994)
    assert g["status"] == "met" and g["ratio"] == pytest.approx(11.0)


def test_tta_goal_when_one_side_never_reaches():
    cnn = _job(_hist(0.99, 0.995, seconds=30))
    never_short = _job(_hist(*[0.99] * 5))  # 300 s without reaching: ratio > 5, cannot tell
    never_long = _job(_hist(*[0.99] * 30))  # 1800 s without reaching: ratio > 30, met
    g = stats.tta_goal(cnn, never_short, 0.994)
    assert g["status"] == "undecided" and g["lower_bound"] and g["ratio"] == pytest.approx(5.0)
    assert "not reach" in g["why"]
    assert stats.tta_goal(cnn, never_long, 0.994)["status"] == "met"
    slow_cnn = _job(_hist(0.99, 0.993))
    g = stats.tta_goal(slow_cnn, never_long, 0.994)
    assert g["status"] == "NOT met" and g["ratio"] is None and "cnn did not reach" in g["why"]


def test_pair_ratios_are_per_pair():
    runs = [{"service": {"wall_seconds": 110, "train_seconds": 100, "client_seconds": 111},
             "bare": {"timed_seconds": 100, "train_seconds": 100, "process_seconds": 105}},
            {"service": {"wall_seconds": 66, "train_seconds": 60, "client_seconds": 67},
             "bare": {"timed_seconds": 60, "train_seconds": 50, "process_seconds": 64}},
            {"service": {"wall_seconds": 51, "train_seconds": 50, "client_seconds": 52},
             "bare": {"timed_seconds": 50, "train_seconds": 50, "process_seconds": 54}}]
    p = stats.pair_ratios(runs)
    assert p["wall"]["values"] == pytest.approx([1.1, 1.1, 1.02])
    assert p["wall"]["median"] == pytest.approx(1.1)
    assert (p["wall"]["min"], p["wall"]["max"]) == pytest.approx((1.02, 1.1))
    assert p["epochs"]["median"] == pytest.approx(1.0) and p["epochs"]["max"] == pytest.approx(1.2)
    assert stats.overhead_pairs({"summary": {}, "runs": runs}) == p  # an old suite.json: recomputed


def test_summarize_skips_missing():
    s = stats.summarize([1.0, None, float("nan"), 3.0])
    assert s == {"values": [1.0, 3.0], "median": 2.0, "min": 1.0, "max": 3.0}
    assert stats.summarize([])["median"] is None


def test_read_history(tmp_path):
    path = tmp_path / "history.json"
    assert worklog.read_history(path) == []
    path.write_text("[{\"epoch\": 1")
    assert worklog.read_history(path) == []
    path.write_text(json.dumps(_hist(0.9)))
    assert worklog.read_history(path)[0]["epoch"] == 1


def test_ceiling_summary_of_an_ensemble():
    hist = [{**e, "member": 1} for e in _hist(0.990, 0.9962)] + [{**e, "member": 2} for e in _hist(0.991, 0.9970)]
    res = {"history": hist, "member_accuracies": [0.9962, 0.9970], "test_accuracy": 0.9976}
    s = stats.ceiling_summary(res, seed=0)
    assert [m["seed"] for m in s["members"]] == [0, 1]
    assert [m["epochs"] for m in s["members"]] == [2, 2]
    assert s["members"][1]["best_epoch"] == 2 and s["members"][1]["train_seconds"] == 120
    assert s["member_median"] == pytest.approx(0.9966)
    assert (s["member_min"], s["member_max"]) == (0.9962, 0.9970)
    assert s["members_meeting_single_goal"] == 1
    assert s["single_goal_met"] and s["ensemble_goal_met"]


def test_ceiling_summary_of_one_model():
    s = stats.ceiling_summary({"history": _hist(0.99, 0.995), "member_accuracies": [], "test_accuracy": 0.995})
    assert len(s["members"]) == 1 and s["members"][0]["test_accuracy"] == 0.995
    assert not s["single_goal_met"] and not s["ensemble_goal_met"]


def test_ceiling_summary_of_two_combined_jobs():
    elastic = {"augment": "elastic", "member_accuracies": [0.9963, 0.9968], "test_accuracy": 0.9972,
               "history": [{**e, "member": m} for m in (1, 2) for e in _hist(0.990, 0.9963)]}
    affine = {"augment": "affine", "member_accuracies": [], "test_accuracy": 0.9966,  # a one-model job
              "history": _hist(0.991, 0.9966), "seed": 5}
    s = stats.combined_ceiling_summary([elastic, affine], 0.9975)
    assert [(m["member"], m["seed"], m["augment"]) for m in s["members"]] == [
        (1, 0, "elastic"), (2, 1, "elastic"), (3, 5, "affine")]
    assert [m["test_accuracy"] for m in s["members"]] == [0.9963, 0.9968, 0.9966]
    assert [m["epochs"] for m in s["members"]] == [2, 2, 2]  # each member's own history
    assert s["member_median"] == 0.9966 and s["ensemble_accuracy"] == 0.9975 and s["ensemble_goal_met"]
    # the single-model goal is judged on the `--augment` (affine) members alone
    assert (s["single_goal_recipe"], s["single_goal_members"], s["single_goal_median"]) == ("affine", 1, 0.9966)
    assert s["single_goal_met"] and s["single_goal_meeting"] == 1
    res = {"jobs": [{"augment": "elastic", "k": 2}, {"augment": "affine", "k": 1}]}
    assert ceiling.ceiling_recipe(res) == "2 x --augment --elastic + 1 x --augment, combined"
    assert ceiling.ceiling_models(res) == "2 `--augment --elastic` models and 1 `--augment` models"


def test_ceiling_recipes_name_architecture_flags():
    req = {"augment": "affine", "conv_channels": [48, 96, 192], "dense_units": None, "dropout": 0.1}
    assert recipes.model_flags(req) == ["--conv-channels", "48,96,192", "--dropout", "0.1"]
    assert recipes.model_flags({"augment": "affine"}) == []
    wide = {"augment": "affine", "k": 2, "model_flags": ["--conv-channels", "48,96,192"],
            "member_accuracies": [0.9971, 0.9973], "test_accuracy": 0.9975, "seed": 100, "history": []}
    plain = {"augment": "affine", "k": 1, "member_accuracies": [0.9968], "test_accuracy": 0.9968, "history": []}
    res = {"jobs": [wide, plain]}
    assert ceiling.ceiling_recipe(res) == "2 x --augment --conv-channels 48,96,192 + 1 x --augment, combined"
    assert recipes.cnn_words(wide) == "the cnn at `--conv-channels 48,96,192`"
    assert recipes.cnn_words(plain) == "the default cnn"
    s = stats.combined_ceiling_summary([wide, plain], 0.9976)
    assert [(m["seed"], recipes.recipe_flags(m)) for m in s["members"]] == [
        (100, ["--augment", "--conv-channels", "48,96,192"]), (101, ["--augment", "--conv-channels", "48,96,192"]),
        (0, ["--augment"])]
    assert s["single_goal_members"] == 3  # all three are `--augment` models, wide or not


def test_arg_value():
    assert recipes.arg_value(["--train-size", "5000", "--test-size", "2000"], "--test-size") == "2000"
    assert recipes.arg_value(["--test-size"], "--test-size") is None
    assert recipes.arg_value([], "--test-size") is None


def test_stamps():
    assert stamps.git_label("abc1234", True) == "abc1234+changes"
    assert stamps.git_label("abc1234", False) == "abc1234"
    assert stamps.git_label(None, True) is None
    line = stamps.format_stamp({"ran_at": "2026-01-02 03:04 UTC", "git": "abc1234+changes", "quick": True,
                               "repeats": 5}, {"seconds": 90})
    assert "2026-01-02 03:04 UTC" in line and "abc1234+changes" in line and "5 repeats" in line
    assert "1.5 min" in line and "Smoke run" in line
    assert "took 42 s" in stamps.format_stamp({"ran_at": "x", "git": "y"}, {"seconds": 42})
    assert "not recorded" in stamps.format_stamp(None)


def test_kept_results_keep_the_others_and_backfill_stamps():
    doc = {"quick": False, "machine": {"date": "2026-01-01 00:00:00 UTC", "git_commit": "1234567", "git_dirty": False},
           "results": {"overhead": {"summary": {}}, "tta": {"jobs": {}, "stamp": {"ran_at": "x", "git": "y"}},
                       "queue": {"n": 1}},
           "timings": {"overhead": {"seconds": 1}, "tta": {"seconds": 2}, "queue": {"seconds": 3}}}
    results, timings = store.kept_results(doc, ["queue", "ceiling"], BENCHMARKS)
    assert sorted(results) == ["overhead", "tta"] and sorted(timings) == ["overhead", "tta"]
    assert results["overhead"]["stamp"]["git"] == "1234567" and results["overhead"]["stamp"]["from_run"]
    assert results["tta"]["stamp"] == {"ran_at": "x", "git": "y"}  # its own stamp stays
    assert store.kept_results(None, ["queue"], BENCHMARKS) == ({}, {})


def test_load_suite_json(tmp_path):
    assert store.load_suite_json(tmp_path / "suite.json") is None
    (tmp_path / "suite.json").write_text("{not json")
    with pytest.raises(SystemExit):
        store.load_suite_json(tmp_path / "suite.json")


def test_clean_json_still_strict():
    assert store.clean_json({"a": math.nan, "b": [1.0, math.inf]}) == {"a": None, "b": [1.0, None]}


def test_stamps_name_the_cpu():
    machine = {"cpu": "AMD EPYC", "cpu_isa": "AVX2"}
    assert stamps.cpu_label(machine) == "AMD EPYC (AVX2)"
    line = stamps.format_stamp({"ran_at": "x", "git": "y", "cpu": stamps.cpu_label(machine)})
    assert "on AMD EPYC (AVX2)" in line
    assert " on " not in stamps.format_stamp({"ran_at": "x", "git": "y"})  # older stamps: no CPU recorded


def test_onednn_section_and_summary():
    def side(steady, ev, acc):
        return {"steady_images_per_second": steady, "epoch_images_per_second": steady * 0.9, "eval_seconds": ev,
                "eval_images_per_second": 10_000 / ev, "test_accuracy": acc, "other_share": 0.01,
                "runs": [{"steady_images_per_second": steady}]}

    res = {"train_images": 20000, "test_images": 10000, "cpu": "AMD EPYC (AVX2)", "tf_default": False,
           "sides": {"0": side(700.0, 4.0, 0.985), "1": side(1050.0, 2.0, 0.986)},
           "train_speedup": 1.5, "eval_speedup": 2.0}
    text = "\n".join(onednn.render(res, Context(args=Namespace(), machine={})))
    assert "| off | 700 |" in text and "| on | 1,050 |" in text and "**1.50x**" in text and "**2.00x**" in text
    assert "this CPU (AMD EPYC (AVX2)) is **off**" in text

    rows = "\n".join(report._summary({"onednn": res}))
    assert "TensorFlow's own choice (oneDNN off)" in rows and "training **1.50x**" in rows


def test_median_and_percentile():
    assert stats.median([3.0, None, 1.0, float("nan"), 2.0]) == 2.0
    assert stats.median([]) is None and stats.median([None]) is None
    xs = [10.0, 20.0, 30.0, 40.0, 50.0]
    assert stats.percentile(xs, 50) == 30.0
    assert stats.percentile(xs, 0) == 10.0 and stats.percentile(xs, 100) == 50.0
    assert stats.percentile(xs, 99) == pytest.approx(49.6)  # interpolated between the two largest
    assert stats.percentile([5.0], 99) == 5.0 and stats.percentile([], 50) is None


def test_div_and_sub_pass_missing_values_on():
    assert stats.div(3.0, 2.0) == 1.5
    assert stats.div(None, 2.0) is None and stats.div(3.0, None) is None and stats.div(3.0, 0) is None
    assert stats.sub(3.0, 2.0) == 1.0 and stats.sub(None, 1.0) is None and stats.sub(1.0, None) is None


def test_latency_and_burst_stats():
    samples = [(0.010, "a"), (0.020, "b"), (0.030, "c")]
    s = stats.latency_stats(samples, {"a": 0.004, "c": 0.006})  # b's runtime was not logged
    assert (s["n"], s["p50"], s["min"], s["max"]) == (3, 0.020, 0.010, 0.030)
    assert s["mean"] == pytest.approx(0.020)
    assert s["worker_samples"] == [0.004, 0.006] and s["worker_p50"] == pytest.approx(0.005)
    b = stats.burst_stats(10, 0.1, 2.0, [0.1] * 10)
    assert b["jobs_per_second"] == 5.0 and b["worker_busy_seconds"] == pytest.approx(1.0)
    assert b["worker_bound_jobs_per_second"] == pytest.approx(10.0)
    assert stats.burst_stats(10, 0.1, 2.0, [])["worker_bound_jobs_per_second"] is None


def test_worker_log_timeline(tmp_path):
    log = tmp_path / "worker.log"
    lines = ["[2026-01-02 03:04:05,000: INFO/MainProcess] not a line of ours",
             "[2026-01-02 03:04:05,100 INFO MainProcess] Task digitq.train[j1] received",
             "[2026-01-02 03:04:06,100 INFO MainProcess] job j1: cnn on 55000 training images",
             "[2026-01-02 03:04:36,100 INFO MainProcess] job j1: evaluating",
             "[2026-01-02 03:04:38,100 INFO MainProcess] job j1: test accuracy 0.99",
             "[2026-01-02 03:04:38,600 INFO MainProcess] Task digitq.train[j1] succeeded in 33.5s: {}",
             "[2026-01-02 03:04:39,000 INFO MainProcess] Task digitq.predict[p1] succeeded in 0.004s: {}"]
    log.write_text("\n".join(lines) + "\n")
    read = worklog.read_log(log)
    assert len(read) == 6 and read[1][0] - read[0][0] == pytest.approx(1.0)
    tl = worklog.job_timeline(read, "j1")
    assert tl["setup"] - tl["received"] == pytest.approx(1.0)
    assert tl["done"] - tl["evaluating"] == pytest.approx(2.0)
    assert tl["succeeded"] - tl["done"] == pytest.approx(0.5) and tl["runtime"] == 33.5
    assert worklog.task_runtimes(read) == {"p1": 0.004}
    assert worklog.read_log(log, offset=log.stat().st_size) == []
    assert worklog.read_log(tmp_path / "missing.log") == []
