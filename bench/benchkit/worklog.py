"""What the worker wrote down: its log lines, a job's timeline in them, and a job's history.json."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

LOG_RE = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) (\w+) ([^\]]+)\] (.*)$")


def read_log(path: Path, offset: int = 0) -> list[tuple[float, str]]:
    """(unix time, message) of each line of a worker log written after `offset` bytes."""
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            text = f.read().decode(errors="replace")
    except OSError:
        return []
    out = []
    for line in text.splitlines():
        m = LOG_RE.match(line)
        if m:
            ts = time.mktime(time.strptime(m.group(1), "%Y-%m-%d %H:%M:%S")) + int(m.group(2)) / 1000
            out.append((ts, m.group(5)))
    return out


def job_timeline(lines, job_id: str, task: str = "digitq.train") -> dict:
    """The worker-log timestamps of one job: received, set up (data loaded), evaluating, done, succeeded."""
    tl: dict = {}
    setup_re = re.compile(rf"^job {re.escape(job_id)}: \S+ on \d+ ")
    for ts, msg in lines:
        if f"Task {task}[{job_id}] received" in msg:
            tl["received"] = ts
        elif "received" in tl:
            if "setup" not in tl and setup_re.match(msg):
                tl["setup"] = ts
            elif msg.startswith(f"job {job_id}: evaluating"):
                tl["evaluating"] = ts
            elif msg.startswith(f"job {job_id}: test accuracy"):
                tl["done"] = ts
            elif f"Task {task}[{job_id}] succeeded in " in msg:
                tl["succeeded"] = ts
                m = re.search(r"succeeded in ([0-9.eE+-]+)s", msg)
                tl["runtime"] = float(m.group(1)) if m else None
                break
    return tl


def task_runtimes(lines, task: str = "digitq.predict") -> dict:
    """{task id: seconds} of each task the log says succeeded (Celery's `succeeded in`)."""
    out = {}
    pat = re.compile(rf"Task {re.escape(task)}\[([^\]]+)\] succeeded in ([0-9.eE+-]+)s")
    for _, msg in lines:
        m = pat.search(msg)
        if m:
            out[m.group(1)] = float(m.group(2))
    return out


def read_history(path: Path) -> list[dict]:
    """A job's history.json (written atomically by the worker after every epoch); [] until it exists."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return []
    return data if isinstance(data, list) else []
