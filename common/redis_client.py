"""Redis clients for digitq's own keys (registry, leases, cancel flags, pixels, presence, job
records): one factory, so a plain `redis://` URL and a Sentinel URL work everywhere alike.

    r = make_redis(settings.broker_url, settings, socket_timeout=30)

A Sentinel URL is Celery's and kombu's form: one `sentinel://` address per sentinel, joined by
`;`, the Redis password (and db) on the first, e.g.
`sentinel://:PASSWORD@10.0.0.1:26379/0;sentinel://10.0.0.2:26379;sentinel://10.0.0.3:26379`.
The client asks the sentinels for the current master of DIGITQ_SENTINEL_MASTER and asks again
after a failover (redis.sentinel); the sentinels' own password is DIGITQ_SENTINEL_PASSWORD.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, TypeVar
from urllib.parse import unquote, urlsplit

from digitq.common.errors import ConfigError

T = TypeVar("T")

SENTINEL_SCHEME = "sentinel"
SENTINEL_SEPARATOR = ";"

SENTINEL_SOCKET_TIMEOUT = 2.0
"""Seconds to wait for one sentinel's answer before asking the next."""

FAILOVER_RETRIES = 12
"""Tries of a command whose connection fails, on a Sentinel URL: with backoff from 0.2 s up to
2 s between tries they span about 18 s, longer than a failover (down-after-milliseconds plus
an election, a few seconds), so a command sent while the master is down lands on the new one."""


@dataclass(frozen=True)
class SentinelAddress:
    """What a Sentinel URL says: the sentinels, and the password and db of the master."""

    sentinels: tuple[tuple[str, int], ...]
    password: str | None
    username: str | None
    db: int


def is_sentinel_url(url: str | None) -> bool:
    return bool(url) and url.strip().lower().startswith(SENTINEL_SCHEME + "://")


def parse_sentinel_url(url: str, name: str = "DIGITQ_BROKER_URL") -> SentinelAddress:
    """The sentinels of `sentinel://[:PW@]h1:26379[/db];sentinel://h2:26379;...`, or ConfigError
    with one line (the password never shown)."""
    example = "e.g. sentinel://:PASSWORD@10.0.0.1:26379/0;sentinel://10.0.0.2:26379"
    hosts, password, username, db = [], None, None, 0
    for i, part in enumerate(p.strip() for p in url.split(SENTINEL_SEPARATOR)):
        if not part:
            continue
        try:
            parts = urlsplit(part)
            port = parts.port or 26379
        except ValueError as exc:
            raise ConfigError(f"{name} is not a usable Sentinel URL ({exc}); {example}") from None
        if parts.scheme != SENTINEL_SCHEME:
            raise ConfigError(f"{name}: every address of a Sentinel URL starts with sentinel://; {example}")
        if not parts.hostname:
            raise ConfigError(f"{name} names a sentinel without a host; {example}")
        hosts.append((parts.hostname, port))
        if password is None and parts.password:
            password, username = unquote(parts.password), unquote(parts.username) if parts.username else None
        path = parts.path.strip("/")
        if path and i == 0:
            if not path.isdigit():
                raise ConfigError(f"{name}: the db after the first sentinel must be a number, got {path!r}; {example}")
            db = int(path)
    if not hosts:
        raise ConfigError(f"{name} names no sentinel; {example}")
    return SentinelAddress(tuple(hosts), password, username, db)


def redact(url: str) -> str:
    """The URL (each address of a Sentinel URL) with its password hidden, for messages."""
    out = []
    for part in url.split(SENTINEL_SEPARATOR):
        if "@" in part and "://" in part:
            scheme, rest = part.split("://", 1)
            part = f"{scheme}://***@{rest.rsplit('@', 1)[1]}"
        out.append(part)
    return SENTINEL_SEPARATOR.join(out)


def sentinel_transport_options(settings) -> dict:
    """What Celery's broker and result backend need besides a Sentinel URL (kombu's
    `master_name` and `sentinel_kwargs` transport options)."""
    sentinel_kwargs = {"socket_timeout": SENTINEL_SOCKET_TIMEOUT, "socket_connect_timeout": SENTINEL_SOCKET_TIMEOUT}
    if settings.sentinel_password:
        sentinel_kwargs["password"] = settings.sentinel_password
    return {"master_name": settings.sentinel_master, "sentinel_kwargs": sentinel_kwargs}


def make_redis(url: str, settings=None, **kwargs):
    """A redis.Redis on `url`: `redis://`, `rediss://`, `unix://`, or a Sentinel URL (then a
    client of the current master, found again after a failover). `kwargs` are redis.Redis'
    (socket_timeout, health_check_interval, ...); `settings` gives the Sentinel master name and
    password (default: read from the environment)."""
    import redis

    if not is_sentinel_url(url):
        return redis.Redis.from_url(url, **kwargs)
    from redis.sentinel import Sentinel

    kwargs.setdefault("retry", patient_retry())
    if settings is None:
        from digitq.common.settings import load_settings

        settings = load_settings()
    address = parse_sentinel_url(url)
    sentinel_kwargs = sentinel_transport_options(settings)["sentinel_kwargs"]
    sentinel = Sentinel(list(address.sentinels), sentinel_kwargs=sentinel_kwargs)
    master_kwargs = dict(kwargs, db=address.db)
    if address.password:
        master_kwargs["password"] = address.password
    if address.username:
        master_kwargs["username"] = address.username
    return sentinel.master_for(settings.sentinel_master, **master_kwargs)


def patient_retry():
    """redis-py's Retry for FAILOVER_RETRIES tries, 0.2 s to 2 s apart (about 18 s in all): what a
    Sentinel client uses, and what a worker uses on any URL (a chunk reading its pixels while Redis
    restarts waits for it rather than failing)."""
    from redis.backoff import ExponentialBackoff
    from redis.retry import Retry

    return Retry(ExponentialBackoff(cap=2.0, base=0.2), FAILOVER_RETRIES)


def memory_policy(r) -> tuple[str | None, int]:
    """Redis' maxmemory-policy and maxmemory (bytes, 0 = no limit), from INFO (CONFIG may be
    disabled on managed Redis)."""
    info = r.info("memory")
    return info.get("maxmemory_policy"), int(info.get("maxmemory") or 0)


def eviction_warning(r) -> str | None:
    """One line when Redis may evict keys (any maxmemory-policy but noeviction): it would drop
    queued jobs, results and leases silently when full. None when it is safe, or unknown."""
    try:
        policy, limit = memory_policy(r)
    except Exception:  # noqa: BLE001 - INFO refused (ACL): nothing to say
        return None
    if not policy or policy == "noeviction":
        return None
    where = f" (maxmemory {limit} bytes)" if limit else " (no maxmemory set yet)"
    return (f"Redis' maxmemory-policy is {policy}{where}: when full it deletes keys, which loses queued jobs, "
            "results and leases silently; set maxmemory-policy noeviction")


def is_out_of_memory(exc: BaseException) -> bool:
    """True for Redis' OOM refusal (maxmemory reached with noeviction), however it was wrapped
    (kombu's OperationalError carries it as text)."""
    import redis

    seen = exc
    for _ in range(4):
        if seen is None:
            break
        if isinstance(seen, redis.exceptions.OutOfMemoryError) or str(seen).startswith("OOM ") \
                or "OOM command not allowed" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


OUT_OF_MEMORY_MESSAGE = ("Redis is full (maxmemory reached, maxmemory-policy noeviction): nothing new was stored; "
                         "free memory or raise maxmemory, then try again")
"""What the client and the worker say when Redis refuses a write for lack of memory."""

FULL_RETRY_MAX = 5.0
"""Most seconds between two tries of a write that Redis refused for lack of memory."""


def while_full(write: Callable[[], T], waiting: str, resumed: str) -> T:
    """`write()`, tried again (every 0.5 s, doubling up to FULL_RETRY_MAX) for as long as Redis
    refuses it for lack of memory (maxmemory with noeviction): what must not be lost waits for
    room. Logs `waiting` once as an error, and `resumed` once the write went through."""
    import logging
    import time

    log = logging.getLogger("digitq.worker")
    delay, noted = 0.5, False
    while True:
        try:
            out = write()
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
            if not noted:
                noted = True
                log.error("%s: %s", waiting, OUT_OF_MEMORY_MESSAGE)
            time.sleep(delay)
            delay = min(delay * 2, FULL_RETRY_MAX)
            continue
        if noted:
            log.info("Redis has room again: %s", resumed)
        return out
