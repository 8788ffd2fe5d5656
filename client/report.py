"""`digitq report`: check the target, then write the files a worker's `digitq.report` task returned.

The worker renders the report on the shared volume (`<job folder>/report/`) and sends every file
back base64-encoded, so a client without the volume mounted still gets them in `-o DIR`.
"""

from __future__ import annotations

import base64
import binascii
import os
from dataclasses import dataclass
from pathlib import Path

from digitq.common.errors import DigitqError
from digitq.common.schemas import check_report_target

__all__ = ["SavedReport", "check_report_output", "check_report_target", "write_report_files"]

REPORT_SUFFIXES = (".png", ".md")
"""The only kinds of file a report holds; anything else in a task result is refused."""


@dataclass
class SavedReport:
    """A report written here by Client.report (`digitq report --json` prints it)."""

    job_id: str
    model: str | None  # NAME:VERSION, when the job registered one
    output: str  # the folder written here
    files: list[str]  # the file names written into it
    worker_folder: str  # where the worker keeps its copy, on the shared volume

    def to_dict(self) -> dict:
        return {"job_id": self.job_id, "model": self.model, "output": self.output, "files": self.files,
                "worker_folder": self.worker_folder}


def check_report_output(output: str | None) -> None:
    """The -o folder may exist, but only as a folder, and it must be creatable and writable;
    checked before anything is queued (InvalidRequest: exit 2)."""
    if output is None:
        return
    import os

    from digitq.common.errors import InvalidRequest

    target = Path(output).expanduser()
    if target.exists() and not target.is_dir():
        raise InvalidRequest(f"output {output} exists and is not a folder")
    existing = next(p for p in (target, *target.parents) if p.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise InvalidRequest(f"output {output}: {existing} is not a writable folder")


def write_report_files(result: dict, out_dir) -> list[Path]:
    """Decode `result["files"]` ({name: base64}) into `out_dir` (created if missing); return the paths.

    Names must be plain file names ending in .png or .md: a result cannot write outside `out_dir`.
    Each file is written under a temporary name and renamed, so it appears whole or not at all.
    """
    files = result.get("files") if isinstance(result, dict) else None
    if not isinstance(files, dict) or not files:
        raise DigitqError("the worker returned no report files")
    out = Path(out_dir).expanduser()
    if out.exists() and not out.is_dir():
        raise DigitqError(f"output {out_dir} exists and is not a folder")
    decoded = {}
    for name, b64 in files.items():
        if (not isinstance(name, str) or name != os.path.basename(name) or name.startswith(".")
                or not name.endswith(REPORT_SUFFIXES)):
            raise DigitqError(f"the worker returned an unexpected report file name {name!r}")
        try:
            decoded[name] = base64.b64decode(b64, validate=True)
        except (binascii.Error, TypeError, ValueError):
            raise DigitqError(f"the worker returned {name} in a form that is not base64") from None
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, data in decoded.items():
        target = out / name
        tmp = out / f".{name}.partial"
        try:
            tmp.write_bytes(data)
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        paths.append(target)
    return paths
