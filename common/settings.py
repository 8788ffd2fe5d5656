"""Settings from DIGITQ_* environment variables, with their defaults and units.

`load_settings()` reads the environment each time it is called, so a process that changes
its environment (a test, the embedded stack) sees the change. Paths are made absolute at
load time: a worker started from another directory must see the same files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from digitq.common.errors import ConfigError

DEFAULT_MNIST_MIRRORS = (
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
)
"""Where the worker fetches the four MNIST IDX files when they are missing (sha256-checked)."""

DEFAULT_VISIBILITY_TIMEOUT = 300
"""Seconds after a worker's last heartbeat before Redis hands its un-acked job to another
worker: the last resort only, since the takeover sweep re-publishes a dead worker's job once
its lease is gone. A running job's heartbeat keeps its message fresh, so this never limits how
long a job may run; see README "Guarantees"."""

DEFAULT_LEASE_SECONDS = 30
"""Seconds a running job's lease lives without a heartbeat (Redis counts them down): how long a
dead worker holds a job before the takeover sweep (every 5 s) puts it back on its queue."""

DEFAULT_RESULT_TTL = 7 * 24 * 3600
"""Seconds Redis keeps a finished job's state and result."""

DEFAULT_MAX_MESSAGE_BYTES = 16 * 1024 * 1024
"""Largest job message (JSON, bytes) a worker accepts."""

DEFAULT_SENTINEL_MASTER = "digitq"
"""The name the sentinels monitor digitq's Redis master under (`sentinel monitor NAME ...`)."""

DEFAULT_NO_WORKER_TIMEOUT = 60
"""Seconds `digitq predict` and `digitq wait` go on while no live worker serves their queue (a
worker's announcement lives 35 s after its last refresh), and while a waited-for chunk or job is
gone from Redis, before they stop with one line that says so."""


def default_home() -> Path:
    """`$XDG_DATA_HOME/digitq`, else `~/.local/share/digitq`."""
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "digitq"


@dataclass(frozen=True)
class Settings:
    home: Path  # DIGITQ_HOME: the shared volume (jobs, models, logs, embedded stack)
    data_dir: Path  # DIGITQ_DATA_DIR: holds mnist/*.gz and users' image folders
    broker_url: str | None  # DIGITQ_BROKER_URL; None means "use the embedded stack"
    result_backend: str | None  # DIGITQ_RESULT_BACKEND; defaults to the broker
    mnist_mirrors: tuple[str, ...] = DEFAULT_MNIST_MIRRORS  # DIGITQ_MNIST_MIRRORS, comma-separated
    cpu_replicas: int = 0  # DIGITQ_CPU_REPLICAS: split the CPU into N logical devices (0 = don't)
    gpus: str | None = None  # DIGITQ_GPUS: "0,1" = the GPUs this worker owns; None = all
    visibility_timeout: int = DEFAULT_VISIBILITY_TIMEOUT  # seconds
    lease_seconds: int = DEFAULT_LEASE_SECONDS  # seconds
    result_ttl: int = DEFAULT_RESULT_TTL  # seconds
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES  # bytes
    metrics_port: int = 0  # DIGITQ_METRICS_PORT: serve Prometheus metrics there (0 = off)
    sentinel_master: str = DEFAULT_SENTINEL_MASTER  # DIGITQ_SENTINEL_MASTER (Sentinel URLs only)
    sentinel_password: str | None = field(default=None, repr=False)  # DIGITQ_SENTINEL_PASSWORD: the sentinels' own password, if any
    no_worker_timeout: int = DEFAULT_NO_WORKER_TIMEOUT  # seconds (DIGITQ_NO_WORKER_TIMEOUT)
    inference_precision: str = "auto"  # DIGITQ_INFERENCE_PRECISION: one of INFERENCE_PRECISIONS

    @property
    def jobs_dir(self) -> Path:
        """Per-job folders: `<home>/jobs/<job_id>/`."""
        return self.home / "jobs"

    @property
    def local_dir(self) -> Path:
        """The embedded stack's pid files, logs, password and Redis data."""
        return self.home / "local"

    @property
    def mnist_dir(self) -> Path:
        return self.data_dir / "mnist"


def _int_env(name: str, default: int, minimum: int = 0) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{name} must be >= {minimum}, got {value}")
    return value


def _path_env(name: str, default: Path) -> Path:
    raw = os.environ.get(name, "").strip()
    return Path(raw).expanduser().resolve() if raw else default.expanduser().resolve()


INFERENCE_PRECISIONS = ("auto", "float32", "bfloat16")
"""DIGITQ_INFERENCE_PRECISION: the arithmetic of a worker's predictions (evaluations and reports
stay float32). auto: bfloat16 on a CPU with bfloat16 arithmetic (AMX or AVX-512 BF16), float32
elsewhere (digitq.worker.devices.inference_precision)."""


def _choice_env(name: str, choices: tuple[str, ...]) -> str:
    raw = os.environ.get(name, "").strip().lower()
    if not raw:
        return choices[0]
    if raw not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}, got {raw!r}")
    return raw


BROKER_SCHEMES = ("redis", "rediss", "unix", "sentinel")
"""URL schemes a broker or result backend may use (Redis over TCP, TLS, a Unix socket, or
Sentinel: `sentinel://h1:26379;sentinel://h2:26379`, digitq.common.redis_client)."""


def check_broker_url(url: str | None, name: str = "DIGITQ_BROKER_URL") -> str | None:
    """`url` if it is a Redis URL digitq can use, else ConfigError with one line that says why
    (the password never shown)."""
    if url is None:
        return None
    from urllib.parse import urlsplit

    from digitq.common.redis_client import is_sentinel_url, parse_sentinel_url

    if is_sentinel_url(url):
        parse_sentinel_url(url, name)
        return url
    example = "e.g. redis://:PASSWORD@host:6379/0"
    try:
        parts = urlsplit(url)
        port = parts.port  # ValueError: not a number, or out of 0-65535
    except ValueError as exc:
        raise ConfigError(f"{name} is not a usable Redis URL ({exc}); {example}") from None
    if parts.scheme not in BROKER_SCHEMES:
        shown = f"scheme {parts.scheme!r}" if parts.scheme else "no scheme"
        raise ConfigError(f"{name} has {shown}: use redis://, rediss:// (TLS), unix:// or sentinel://; {example}")
    if parts.scheme != "unix" and not parts.hostname:
        raise ConfigError(f"{name} names no host; {example}")
    if port == 0:
        raise ConfigError(f"{name} has port 0; {example}")
    return url


def _check_home(home: Path) -> Path:
    if home.exists() and not home.is_dir():
        raise ConfigError(f"DIGITQ_HOME {home} is not a folder: point it at a folder (it is created if missing)")
    return home


def _check(s: "Settings") -> "Settings":
    if s.lease_seconds >= s.visibility_timeout:
        raise ConfigError(
            f"DIGITQ_LEASE_SECONDS ({s.lease_seconds}) must be smaller than DIGITQ_VISIBILITY_TIMEOUT "
            f"({s.visibility_timeout}): a redelivered job must find its dead worker's lease expired"
        )
    return s


def load_settings() -> Settings:
    """Read the DIGITQ_* environment variables (see README "Configuration")."""
    home = _check_home(_path_env("DIGITQ_HOME", default_home()))
    mirrors = os.environ.get("DIGITQ_MNIST_MIRRORS", "").strip()
    broker = check_broker_url(os.environ.get("DIGITQ_BROKER_URL", "").strip() or None)
    return _check(Settings(
        home=home,
        data_dir=_path_env("DIGITQ_DATA_DIR", home / "data"),
        broker_url=broker,
        result_backend=check_broker_url(os.environ.get("DIGITQ_RESULT_BACKEND", "").strip() or None,
                                        "DIGITQ_RESULT_BACKEND") or broker,
        mnist_mirrors=tuple(m.strip() for m in mirrors.split(",") if m.strip()) if mirrors else DEFAULT_MNIST_MIRRORS,
        cpu_replicas=_int_env("DIGITQ_CPU_REPLICAS", 0),
        gpus=os.environ.get("DIGITQ_GPUS", "").strip() or None,
        visibility_timeout=_int_env("DIGITQ_VISIBILITY_TIMEOUT", DEFAULT_VISIBILITY_TIMEOUT, 1),
        lease_seconds=_int_env("DIGITQ_LEASE_SECONDS", DEFAULT_LEASE_SECONDS, 1),
        result_ttl=_int_env("DIGITQ_RESULT_TTL", DEFAULT_RESULT_TTL, 1),
        max_message_bytes=_int_env("DIGITQ_MAX_MESSAGE_BYTES", DEFAULT_MAX_MESSAGE_BYTES, 1024),
        metrics_port=_int_env("DIGITQ_METRICS_PORT", 0),
        sentinel_master=os.environ.get("DIGITQ_SENTINEL_MASTER", "").strip() or DEFAULT_SENTINEL_MASTER,
        sentinel_password=os.environ.get("DIGITQ_SENTINEL_PASSWORD", "") or None,
        no_worker_timeout=_int_env("DIGITQ_NO_WORKER_TIMEOUT", DEFAULT_NO_WORKER_TIMEOUT, 1),
        inference_precision=_choice_env("DIGITQ_INFERENCE_PRECISION", INFERENCE_PRECISIONS),
    ))
