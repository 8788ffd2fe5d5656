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


from hypothesis import given, settings as hsettings, strategies as st  # noqa: E402

_parts = st.sampled_from(["..", ".", "a", "b", "link", "", "/", "~", "%2e%2e", "a/../..", "\\..", "x" * 3])


@hsettings(max_examples=400, deadline=None)
@given(st.lists(_parts, max_size=6), st.booleans())
def test_resolve_within_never_returns_a_path_outside_the_roots(tmp_path_factory, parts, absolute):
    base = tmp_path_factory.getbasetemp() / "prop"
    root = base / "root"
    if not root.exists():
        (root / "a").mkdir(parents=True)
        (base / "outside").mkdir()
        (root / "link").symlink_to(base / "outside")
    raw = "/".join(parts)
    if absolute:
        raw = "/" + raw
    try:
        p = resolve_within(raw, [root])
    except PathNotAllowed as exc:
        assert "\n" not in str(exc)
        return
    assert p == root.resolve() or root.resolve() in p.parents
