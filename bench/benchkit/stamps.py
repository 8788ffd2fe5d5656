"""Where a result comes from: when it ran, on which commit and CPU; the record of the machine."""

from __future__ import annotations

import os
import platform
import socket
import subprocess
import sys
import time
from pathlib import Path

from benchkit.config import REPO


def utc_now() -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())


def git_state() -> tuple[str | None, bool]:
    """(short commit, whether tracked files have uncommitted changes) of the repository now."""
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip() or None
    dirty = bool(subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True).stdout.strip())
    return commit, dirty


def git_label(commit: str | None, dirty: bool) -> str | None:
    """The short commit, with "+changes" when the working tree had uncommitted changes."""
    return (commit + ("+changes" if dirty else "")) if commit else None


def cpu_label(machine: dict) -> str:
    """The CPU a section ran on, for its stamp: the model name and its vector instructions."""
    return f"{machine.get('cpu', 'unknown CPU')} ({machine.get('cpu_isa', 'instructions not recorded')})"


def make_stamp(quick: bool, repeats: int | None, machine: dict) -> dict:
    """The stamp a section's result gets when it starts running."""
    return {"ran_at": utc_now(), "git": git_label(*git_state()), "quick": quick, "repeats": repeats,
            "cpu": cpu_label(machine)}


def format_stamp(stamp: dict | None, timing: dict | None = None) -> str:
    """The line under a report section's title: when the result was measured, on which code, how long it took."""
    if not stamp:
        return "_When this ran is not recorded._"
    parts = [f"ran {stamp.get('ran_at') or 'at an unrecorded time'}", f"git {stamp.get('git') or 'unknown'}"]
    if stamp.get("cpu"):
        parts.append(f"on {stamp['cpu']}")
    if stamp.get("repeats"):
        parts.append(f"{stamp['repeats']} repeat{'s' if stamp['repeats'] != 1 else ''}")
    if timing and timing.get("seconds") is not None:
        sec = timing["seconds"]
        parts.append(f"took {sec / 60:.1f} min" if sec >= 90 else f"took {sec:.0f} s")
    text = "_Measured: " + ", ".join(parts) + "._"
    if stamp.get("from_run"):
        text += " _(Stamp taken from its run's machine record.)_"
    if stamp.get("quick"):
        text += " **Smoke run (--quick): not real figures.**"
    return text


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo ("unknown" elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def cpu_isa() -> str:
    """The widest vector instructions the CPU offers, as TensorFlow's kernels care about them:
    "AVX2", "AVX-512 (VNNI, BF16)", "AMX, AVX-512 (...)" ("unknown" without /proc/cpuinfo)."""
    flags: set[str] = set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    if not flags:
        return "unknown"
    if "avx512f" in flags:
        extras = [name for flag, name in (("avx512_vnni", "VNNI"), ("avx512_bf16", "BF16")) if flag in flags]
        isa = "AVX-512" + (f" ({', '.join(extras)})" if extras else "")
        return ("AMX, " + isa) if "amx_tile" in flags else isa
    return "AVX2" if "avx2" in flags else "no AVX2"


def tf_default_onednn() -> bool | None:
    """Whether TensorFlow turns its oneDNN kernels on by itself on this CPU: a fresh interpreter that
    imports TensorFlow without digitq and without TF_ENABLE_ONEDNN_OPTS (None if it cannot tell)."""
    env = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    code = "from tensorflow.python.util import _pywrap_util_port as p; print(p.IsMklEnabled())"
    try:
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.TimeoutExpired):
        return None
    last = (out.stdout.strip().splitlines() or [""])[-1]
    return {"True": True, "False": False}.get(last)


def _version(*names) -> str | None:
    from importlib import metadata

    for n in names:
        try:
            return metadata.version(n)
        except metadata.PackageNotFoundError:
            continue
    return None


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return None


def machine_info() -> dict:
    """The machine record of a run: CPU, memory, software versions, date, commit, load."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    commit, dirty = git_state()
    return {"cpu": cpu_model(), "cpu_isa": cpu_isa(), "tf_default_onednn": tf_default_onednn(),
            "logical_cpus": os.cpu_count(), "usable_cpus": usable, "memory_gib": _memory_gib(),
            "python": platform.python_version(), "tensorflow": _version("tensorflow-cpu", "tensorflow"),
            "keras": _version("keras"), "celery": _version("celery"), "redis_py": _version("redis"),
            "numpy": _version("numpy"), "platform": platform.platform(), "hostname": socket.gethostname(),
            "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), "git_commit": commit, "git_dirty": dirty,
            "load_average_start": list(os.getloadavg())}
