"""Finding the candidate image files in a folder, without opening any.

Kept apart from `images` (which decodes them) so that listing a folder needs neither NumPy
nor Pillow: `digitq predict` lists the folder and starts its preprocessing processes before
its own start-up has imported them.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from pathlib import Path

from digitq.common.errors import ImageError

IGNORED_FILE_NAMES = frozenset({"thumbs.db", "desktop.ini"})
"""File names (lower case) that operating systems drop into picture folders; never yielded."""


def iter_image_files(folder: str | os.PathLike, recursive: bool = False) -> Iterator[Path]:
    """Yield the candidate files in a folder, sorted by name (depth first when recursive).

    Yields every entry that is not a folder, whatever its extension, so that a stray
    `notes.txt` or an unsupported `.heic` photo is reported by the caller as an error row
    instead of vanishing silently. Skips hidden entries (name starting with '.') and
    IGNORED_FILE_NAMES. Entries that cannot be examined (a symlink loop, a dangling link, a
    sub-folder that cannot be listed) are yielded too, so the caller reports them.
    With recursive=True, sub-folders are walked, following symlinks, but each real folder
    only once, so a link back to a parent folder ends the walk instead of looping.
    Raises ImageError if `folder` itself is missing, not a folder or cannot be listed.
    """
    root = Path(folder)
    info = stat_folder(root)
    try:
        entries = list_folder(root)
    except OSError as exc:
        raise ImageError(f"{one_line(str(root))}: {describe_os_error(exc)}") from None
    yield from walk_files(entries, {(info.st_dev, info.st_ino)}, recursive)


def list_folder(folder: Path) -> list[os.DirEntry]:
    """A folder's entries sorted by name (OSError if it cannot be listed)."""
    with os.scandir(folder) as entries:
        return sorted(entries, key=lambda entry: entry.name)


def walk_files(entries: list[os.DirEntry], visited: set[tuple[int, int]], recursive: bool) -> Iterator[Path]:
    """Yield candidate files depth first in name order; see `iter_image_files`.

    `visited` holds (device, inode) of the folders already walked; an explicit stack, not
    recursion, so a very deep tree cannot exhaust Python's recursion limit.
    """
    stack = [iter(entries)]
    while stack:
        entry = next(stack[-1], None)
        if entry is None:
            stack.pop()
            continue
        if entry.name.startswith(".") or entry.name.lower() in IGNORED_FILE_NAMES:
            continue
        path = Path(entry.path)
        try:
            is_folder = entry.is_dir()  # follows symlinks; raises on a symlink loop
            info = entry.stat() if is_folder else None
        except OSError:
            yield path  # load_image(path) says why ("unreadable: symlink loop", ...)
            continue
        if not is_folder:
            yield path
        elif recursive and (info.st_dev, info.st_ino) not in visited:
            visited.add((info.st_dev, info.st_ino))
            try:
                stack.append(iter(list_folder(path)))
            except OSError:
                yield path  # load_image(path) then says why ("unreadable: permission denied")


def stat_folder(folder: Path) -> os.stat_result:
    """stat() of a folder given by the user; ImageError if it is missing or not a folder."""
    name = one_line(str(folder))
    try:
        info = folder.stat()
    except (OSError, ValueError) as exc:
        if getattr(exc, "errno", None) == errno.ENOENT:
            raise ImageError(f"{name}: folder not found") from None
        raise ImageError(f"{name}: {describe_os_error(exc)}") from None
    if not stat.S_ISDIR(info.st_mode):
        raise ImageError(f"{name}: not a folder")
    return info


def is_folder(path: Path) -> bool:
    """True if `path` is a folder (following symlinks); False also when it cannot be examined."""
    try:
        return path.is_dir()
    except OSError:  # a symlink loop raises on some Python versions
        return False


def describe_os_error(exc: Exception) -> str:
    """A one-line, plain description of why a file or folder could not be read."""
    if isinstance(exc, ValueError):  # e.g. a NUL byte in the path
        return "invalid file name"
    code = getattr(exc, "errno", None)
    if code == errno.ENOENT:
        return "file not found"
    if code in (errno.EACCES, errno.EPERM):
        return "unreadable: permission denied"
    if code == errno.ELOOP:
        return "unreadable: symlink loop"
    if code == errno.EISDIR:
        return "is a folder, not a file"
    if code == errno.ENOTDIR:
        return "file not found (a parent is not a folder)"
    reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return "unreadable: " + one_line(reason[:1].lower() + reason[1:])


def one_line(text: str) -> str:
    """`text` with line breaks and other control characters replaced by spaces."""
    return "".join(" " if ord(char) < 32 or ord(char) == 127 else char for char in text)
