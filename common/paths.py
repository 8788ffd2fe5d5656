"""Checks on paths and ids that arrive in job messages: resolve, then refuse what lies outside the roots."""

from __future__ import annotations

from pathlib import Path

from digitq.common.errors import PathNotAllowed


def resolve_within(path: str | Path, roots: list[Path], base: Path | None = None) -> Path:
    """Resolve `path` (relative ones against `base`, default the first root), following symlinks,
    and return it if it lies inside one of `roots`; raise PathNotAllowed otherwise."""
    raw = str(path)
    if not raw or "\x00" in raw or any(ord(c) < 32 for c in raw):
        raise PathNotAllowed(f"invalid path {raw!r}")
    p = Path(raw).expanduser()
    if not p.is_absolute():
        p = (base or roots[0]) / p
    try:
        resolved = p.resolve(strict=False)
    except RuntimeError:  # Python < 3.13 reports a symlink loop this way
        raise PathNotAllowed("unreadable: symlink loop") from None
    except OSError as exc:
        raise PathNotAllowed("unreadable: symlink loop" if exc.errno == 40 else f"cannot resolve {raw!r}: {exc.strerror}") from None
    for root in roots:
        root = root.resolve()
        if resolved == root or root in resolved.parents:
            return resolved
    allowed = " or ".join(str(r) for r in roots)
    if not resolved.exists():
        raise PathNotAllowed(f"path {raw!r} does not exist (and it must lie below {allowed})")
    raise PathNotAllowed(f"path {raw!r} is outside the worker's allowed roots ({allowed})")
