"""BENCHMARKS.md is rendered from bench/results/suite.json: the report, the registry of sections and their
result dataclasses agree with what is committed. Nothing is run or trained."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))  # where `python bench/suite.py` finds benchkit

from benchkit import cli, config, report, runner  # noqa: E402
from benchkit.sections import BENCHMARKS, REPORT_ORDER, SECTIONS  # noqa: E402

SUITE_JSON = REPO / "bench" / "results" / "suite.json"


def _committed() -> dict:
    return json.loads(SUITE_JSON.read_text())


def test_report_renders_the_committed_benchmarks_md():
    """The committed report, byte for byte, from the committed suite.json (plots linked, not redrawn)."""
    run = runner.load_run(cli.parse_args(["--render-only"]))
    run.plot_files = {name: config.PLOTS / f"{name}.png" for name, res in run.results.items() if "error" not in res}
    assert report.render_report(run, config.REPO) == config.REPORT.read_text()


def test_render_only_rewrites_the_same_report(tmp_path):
    """`python bench/suite.py --render-only`, end to end, into a scratch copy of the repository's layout."""
    pytest.importorskip("matplotlib")
    (tmp_path / "results").mkdir()
    shutil.copy(SUITE_JSON, tmp_path / "results" / "suite.json")
    plots = tmp_path / "bench" / "plots"
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "suite.py"), "--render-only",
                           "--out", str(tmp_path / "results"), "--plots", str(plots),
                           "--report", str(tmp_path / "BENCHMARKS.md")],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "MPLBACKEND": "Agg"})
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "BENCHMARKS.md").read_text() == config.REPORT.read_text()
    assert sorted(p.name for p in plots.iterdir()) == sorted(f"{n}.png" for n in _committed()["results"])


def test_suite_help_lists_every_option():
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "suite.py"), "--help"], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    for flag in ("--quick", "--only", "--home", "--ceiling-job", "--render-only", "--overhead-repeats"):
        assert flag in proc.stdout


def test_registry_orders_every_section():
    assert BENCHMARKS == ("overhead", "tta", "ceiling", "queue", "predict", "scaling", "onednn")
    assert sorted(REPORT_ORDER) == sorted(BENCHMARKS)
    assert all(SECTIONS[name].name == name for name in BENCHMARKS)


@pytest.mark.parametrize("name", sorted(_committed()["results"]))
def test_result_dataclass_matches_suite_json(name):
    """Each section's result dataclass has exactly the keys its committed result has, and round-trips."""
    data = _committed()["results"][name]
    result = SECTIONS[name].result.from_dict(data)
    assert result.to_dict() == {k: v for k, v in data.items() if k != "stamp"}


def test_sections_repeat_as_the_stamps_say():
    args = cli.parse_args(["--repeats", "4", "--overhead-repeats", "6"])
    assert {n: s.repeats(args) for n, s in SECTIONS.items()} == {
        "overhead": 6, "tta": None, "ceiling": None, "queue": None, "predict": 4, "scaling": 4, "onednn": 4}


def test_no_bench_file_is_long():
    longest = max((len(p.read_text().splitlines()), p.name) for p in (REPO / "bench").rglob("*.py"))
    assert longest[0] <= 800, longest
