"""How much CPU other processes used while something was measured: the noise a shared machine adds."""

from __future__ import annotations

import os
import resource
import time

CLK = os.sysconf("SC_CLK_TCK")
"""Clock ticks per second of /proc's CPU times."""


def _busy_seconds() -> float:
    """CPU seconds all CPUs spent busy since boot (/proc/stat; guest time is already in user)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return (sum(v[:8]) - v[3] - v[4]) / CLK


def _pid_cpu(pid: int | None) -> float:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK  # utime, stime
    except (OSError, ValueError, IndexError, TypeError):
        return 0.0


def usable_cpus() -> int:
    """The CPUs this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


class CpuMeter:
    """How much CPU other processes (not this suite, its children, the embedded stack or the second worker)
    used while a measurement ran."""

    def __init__(self, pids):
        self.t = time.perf_counter()
        self.busy = _busy_seconds()
        self.own = {p: _pid_cpu(p) for p in pids if p}  # pid -> its CPU seconds when first seen
        self.ru = self._rusage()
        self.adjust = 0.0
        self.done = False

    def add(self, pid: int) -> None:
        """A process of ours that started after this meter did: all its CPU counts."""
        self.own.setdefault(pid, 0.0)

    def retire(self, pid: int, child: bool) -> None:
        """Before `pid` exits: a child's CPU will show in RUSAGE_CHILDREN once it is waited for (only the part
        before this meter started must come off); anybody else's must be taken now."""
        if pid not in self.own:
            return
        base = self.own.pop(pid)
        self.adjust += -base if child else max(0.0, _pid_cpu(pid) - base)

    @staticmethod
    def _rusage() -> float:
        c, s = resource.getrusage(resource.RUSAGE_CHILDREN), resource.getrusage(resource.RUSAGE_SELF)
        return c.ru_utime + c.ru_stime + s.ru_utime + s.ru_stime

    def stop(self) -> dict:
        """Wall seconds, the machine's busy CPU seconds, ours, the others' and their share of all CPUs."""
        self.done = True
        wall = time.perf_counter() - self.t
        busy = _busy_seconds() - self.busy
        ours = self._rusage() - self.ru + self.adjust + sum(max(0.0, _pid_cpu(p) - c) for p, c in self.own.items())
        other = max(0.0, busy - ours)
        return {"wall": wall, "busy_cpu_seconds": busy, "own_cpu_seconds": ours, "other_cpu_seconds": other,
                "other_share": other / (wall * usable_cpus()) if wall > 0 else None}


class Meters:
    """The CpuMeters still running, told when a process of ours starts or is about to exit."""

    def __init__(self):
        self._running: list[CpuMeter] = []

    def start(self, pids) -> CpuMeter:
        m = CpuMeter(pids)
        self._running = [x for x in self._running if not x.done] + [m]
        return m

    def track(self, pids) -> None:
        for m in self._running:
            for p in pids:
                m.add(p)

    def retire(self, pids, child: bool) -> None:
        for m in self._running:
            for p in pids:
                m.retire(p, child)
