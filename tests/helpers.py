"""Checks and waits the test files share: a CLI run that succeeded, a one-line error, an event
waited for (never a fixed sleep), and the MNIST test set read from the IDX files."""

from __future__ import annotations

import gzip
import json
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np

from tests.processes import run_cli


def ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    """Exit 0 and no traceback."""
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout: {proc.stdout[-2000:]}\nstderr: {proc.stderr[-3000:]}"
    assert "Traceback" not in proc.stderr
    return proc


def cli_json(args: list[str], env: dict) -> object:
    """Run `digitq ARGS` and parse its stdout as JSON."""
    return json.loads(ok(run_cli(args, env)).stdout)


def assert_one_line_error(proc: subprocess.CompletedProcess, *fragments: str, code: int | None = None,
                          after_submitted: bool = False) -> str:
    """A non-zero exit (`code` when given), no traceback, and stderr's only line is `error: ...`
    holding every fragment; `after_submitted`: a `submitted ...` line may come before it."""
    assert proc.returncode != 0, proc.stdout[-2000:]
    if code is not None:
        assert proc.returncode == code, (proc.returncode, proc.stdout[-1000:], proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    if after_submitted and len(lines) == 2 and lines[0].startswith("submitted "):
        lines = lines[1:]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-3000:]
    for f in fragments:
        assert f in lines[0], lines[0]
    return lines[0]


def wait_for(pred, timeout: float, what: str, every: float = 0.2):
    """Poll `pred` until it returns something true (which is returned); fail after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(every)


def read_idx(path: Path) -> np.ndarray:
    """An MNIST IDX file (.gz) as a uint8 array: images [N, 28, 28] or labels [N]."""
    with gzip.open(path) as f:
        raw = f.read()
    ndim = raw[3]
    shape = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def mnist_test(data_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """The MNIST test set: images uint8 [10000, 28, 28], labels uint8 [10000]."""
    return (read_idx(data_dir / "mnist" / "t10k-images-idx3-ubyte.gz"),
            read_idx(data_dir / "mnist" / "t10k-labels-idx1-ubyte.gz"))


def run_py(code: str, env: dict, timeout: float = 600) -> dict:
    """Run Python `code` in a fresh interpreter (TensorFlow's devices are set before it starts)
    and return the JSON object its last line of output printed."""
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def history(home: Path, job_id: str) -> list:
    """A job's history.json entries so far (one per epoch; [] before the first)."""
    try:
        return json.loads((Path(home) / "jobs" / job_id / "history.json").read_text())
    except (OSError, ValueError):
        return []


def backed_up_epochs(job_folder: Path) -> int:
    """Epochs covered by the job's newest backup generation (digitq.worker.backup; 0 if none).

    A job's history.json gets an epoch's entry just before the backup that counts that epoch
    done, so a test that kills a worker to see it resume waits for this, not for the history."""
    for gen in sorted((Path(job_folder) / "backup").glob("gen-*"), reverse=True):
        try:
            state = json.loads((gen / "state.json").read_text())
        except (OSError, ValueError):
            continue
        return int(state.get("epoch", 0))
    return 0


# digitq.worker.train's "<label>: <arch> on <n> <data> images (<n> validation), ..." line
_START = re.compile(rb": [\w-]+ on \d+ \S+ images \(\d+ validation\)")


def training_starts(redis, job_id: str) -> list[bytes]:
    """The lines of a job's log (Redis) that say a worker started or resumed training it."""
    from digitq.common.names import log_key
    return [line for line in redis.lrange(log_key(job_id), 0, -1) if _START.search(line)]
