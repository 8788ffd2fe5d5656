import pytest

from digitq.common.errors import DigitqError
from digitq.common.paths import resolve_within
from digitq.common.errors import PathNotAllowed
from digitq.common.settings import load_settings


def test_defaults_and_absolute_paths(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DIGITQ_HOME", "rel-home")
    monkeypatch.delenv("DIGITQ_DATA_DIR", raising=False)
    monkeypatch.delenv("DIGITQ_BROKER_URL", raising=False)
    s = load_settings()
    assert s.home == tmp_path / "rel-home"
    assert s.data_dir == s.home / "data"
    assert s.broker_url is None
    assert s.mnist_dir == s.data_dir / "mnist"


def test_bad_numbers_are_one_line_errors(monkeypatch):
    monkeypatch.setenv("DIGITQ_CPU_REPLICAS", "two")
    with pytest.raises(DigitqError, match="DIGITQ_CPU_REPLICAS must be a whole number, got 'two'"):
        load_settings()
    monkeypatch.setenv("DIGITQ_CPU_REPLICAS", "-1")
    with pytest.raises(DigitqError, match=">= 0"):
        load_settings()


def test_resolve_within_refuses_escapes(tmp_path):
    root = tmp_path / "root"
    (root / "ok").mkdir(parents=True)
    (tmp_path / "outside").mkdir()
    (root / "link").symlink_to(tmp_path / "outside")
    assert resolve_within("ok", [root]) == root / "ok"
    assert resolve_within(str(root / "ok"), [root]) == root / "ok"
    for bad in ("../outside", str(tmp_path / "outside"), "link", "ok/../../outside", "/etc/passwd", "a\x00b"):
        with pytest.raises(PathNotAllowed):
            resolve_within(bad, [root])
