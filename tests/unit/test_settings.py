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


def test_sentinel_urls_are_accepted_and_bad_ones_are_one_line(monkeypatch):
    from digitq.common.errors import ConfigError
    from digitq.common.redis_client import parse_sentinel_url, redact
    from digitq.common.settings import check_broker_url, load_settings

    url = "sentinel://:pw@10.0.0.1:26379/2;sentinel://10.0.0.2:26380;sentinel://10.0.0.3"
    assert check_broker_url(url) == url
    address = parse_sentinel_url(url)
    assert address.sentinels == (("10.0.0.1", 26379), ("10.0.0.2", 26380), ("10.0.0.3", 26379))
    assert address.password == "pw" and address.db == 2
    assert redact(url) == "sentinel://***@10.0.0.1:26379/2;sentinel://10.0.0.2:26380;sentinel://10.0.0.3"
    for bad in ("sentinel://:pw@;sentinel://h2", "sentinel://h1:26379;redis://h2:6379", "sentinel://h1:notaport",
                "sentinel://h1/x"):
        with pytest.raises(ConfigError) as exc:
            check_broker_url(bad)
        assert "\n" not in str(exc.value) and "pw" not in str(exc.value).replace("PASSWORD", "")
    monkeypatch.setenv("DIGITQ_BROKER_URL", url)
    monkeypatch.setenv("DIGITQ_SENTINEL_MASTER", "mymaster")
    monkeypatch.setenv("DIGITQ_SENTINEL_PASSWORD", "sentinel-secret")
    s = load_settings()
    assert s.sentinel_master == "mymaster" and "sentinel-secret" not in repr(s)


def test_celery_gets_the_sentinel_transport_options(monkeypatch):
    from digitq.common.celery_app import make_celery
    from digitq.common.settings import load_settings

    url = "sentinel://:pw@10.0.0.1:26379/0;sentinel://10.0.0.2:26379"
    monkeypatch.setenv("DIGITQ_SENTINEL_PASSWORD", "sp")
    app = make_celery(load_settings(), url)
    for opts in (app.conf.broker_transport_options, app.conf.result_backend_transport_options):
        assert opts["master_name"] == "digitq" and opts["sentinel_kwargs"]["password"] == "sp"
    assert type(app.backend).__name__ == "SentinelBackend"


def test_inference_precision_is_a_choice(monkeypatch):
    assert load_settings().inference_precision == "auto"
    monkeypatch.setenv("DIGITQ_INFERENCE_PRECISION", "BFloat16")
    assert load_settings().inference_precision == "bfloat16"
    monkeypatch.setenv("DIGITQ_INFERENCE_PRECISION", "int8")
    with pytest.raises(DigitqError, match="^DIGITQ_INFERENCE_PRECISION must be one of auto, float32, bfloat16, got 'int8'$"):
        load_settings()
