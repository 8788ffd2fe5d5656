"""The harness every section runs on: a fresh DIGITQ_HOME with the embedded stack, the `digitq` CLI and
bench/bare_keras.py as processes, the CPU meters that follow them, and the jobs they run."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchkit.config import BENCH, HISTORY_POLL, REPO, TINY_ARGS
from benchkit.meters import CpuMeter, Meters
from benchkit.stamps import machine_info
from benchkit.stats import first_reaching
from benchkit.store import last_json
from benchkit.worklog import job_timeline, read_history, read_log

TRAIN_PARTS = ("startup", "queue", "setup", "fit_other", "epochs", "eval_save", "bookkeeping", "tail")
"""Where a training job's time goes, from the client's start to its exit (see the overhead section)."""


def _data_dir(given: str | None) -> Path:
    """--data-dir, else $DIGITQ_DATA_DIR, else ../shared/data; it must hold mnist/."""
    if given:
        data_dir = Path(given).expanduser().resolve()
    elif os.environ.get("DIGITQ_DATA_DIR"):
        data_dir = Path(os.environ["DIGITQ_DATA_DIR"]).expanduser().resolve()
    else:
        data_dir = (REPO / ".." / "shared" / "data").resolve()
    if not (data_dir / "mnist").is_dir():
        raise SystemExit(f"no MNIST in {data_dir / 'mnist'}: pass --data-dir")
    return data_dir


def digitq_argv() -> list[str]:
    """How to run the `digitq` CLI of this interpreter's environment."""
    script = Path(sys.executable).with_name("digitq")
    return [str(script)] if script.exists() else [sys.executable, "-m", "digitq.client"]


def log(msg: str) -> None:
    """A progress line on stderr."""
    print(f"[suite {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class Harness:
    """The processes and jobs a section measures, and what they leave behind for later sections."""

    def __init__(self, args, out: Path):
        self.args = args
        self.out = out
        self.scratch = Path(tempfile.mkdtemp(prefix="digitq-suite-"))
        self.home = Path(args.home).expanduser().resolve() if args.home else self.scratch / "home"
        self.home.mkdir(parents=True, exist_ok=True)
        self.data_dir = _data_dir(args.data_dir)
        # This process (the queue benchmark's client) and every subprocess see the same settings:
        # the embedded stack under the fresh home, one CPU device unless a benchmark says otherwise.
        for k in ("DIGITQ_BROKER_URL", "DIGITQ_RESULT_BACKEND", "DIGITQ_CPU_REPLICAS", "DIGITQ_GPUS"):
            os.environ.pop(k, None)
        os.environ.update(DIGITQ_HOME=str(self.home), DIGITQ_DATA_DIR=str(self.data_dir))
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        self.env = dict(os.environ)
        self.python = sys.executable
        self.digitq = digitq_argv()
        self.models: dict = {}
        """Models registered along the way that later sections reuse: "warm", "tta-cnn", "tta-seed-cnn"."""
        self.warm = False
        self.w2 = None
        self.meters = Meters()
        self.machine = machine_info()

    # --- processes ------------------------------------------------------------------------------
    log = staticmethod(log)

    def cli(self, args: list[str], check: bool = True, timeout: float | None = None) -> subprocess.CompletedProcess:
        proc = subprocess.run(self.digitq + args, env=self.env, capture_output=True, text=True,
                              timeout=timeout or self.args.timeout, stdin=subprocess.DEVNULL)
        if check and proc.returncode != 0:
            raise RuntimeError(f"`digitq {' '.join(args)}` exited {proc.returncode}:\n{proc.stderr[-3000:]}")
        return proc

    def stack_pids(self) -> list[int]:
        pids = []
        for name in ("worker.pid", "redis.pid"):
            try:
                pids.append(int((self.home / "local" / name).read_text().strip()))
            except (OSError, ValueError):
                pass
        return pids

    def meter(self) -> CpuMeter:
        """A CpuMeter that follows the stack and the second worker as they start and stop."""
        pids = self.stack_pids()
        if self.w2 is not None and self.w2.poll() is None:
            pids.append(self.w2.pid)
        return self.meters.start(pids)

    @property
    def worker_log(self) -> Path:
        return self.home / "local" / "worker.log"

    def log_offset(self, path: Path | None = None) -> int:
        try:
            return (path or self.worker_log).stat().st_size
        except OSError:
            return 0

    def local_up(self) -> float:
        t = time.perf_counter()
        self.cli(["local", "up", "--json"])
        took = time.perf_counter() - t
        self.meters.track(self.stack_pids())
        return took

    def local_down(self) -> None:
        self.meters.retire(self.stack_pids(), child=False)
        self.cli(["local", "down", "--json"], check=False, timeout=120)
        self.warm = False

    def ensure_warm(self) -> None:
        """The embedded stack up, its worker past its first (tiny) job."""
        if self.warm:
            return
        self.local_up()
        res = self.service_train(TINY_ARGS + ["--name", "bench-warm"])
        self.models["warm"] = res["model"]
        self.warm = True
        self.log(f"stack warm (tiny job {res['client_seconds']:.1f} s)")

    def service_train(self, args: list[str], timeout: float | None = None) -> dict:
        """`digitq submit-train --wait --json ARGS`, timed from the client, broken down with the worker log."""
        offset = self.log_offset()
        meter = self.meter()
        t0w, t0 = time.time(), time.perf_counter()
        proc = self.cli(["submit-train", "--wait", "--json", *args], timeout=timeout)
        client = time.perf_counter() - t0
        cpu = meter.stop()
        t1w = t0w + client
        res = last_json(proc.stdout)
        if res.get("state") != "SUCCESS":
            raise RuntimeError(f"job {res.get('job_id')} ended {res.get('state')}: {res.get('error')}")
        time.sleep(0.3)  # the worker's last log line
        tl = job_timeline(read_log(self.worker_log, offset), res["job_id"])
        train_s = res.get("train_seconds")
        parts = dict.fromkeys(TRAIN_PARTS)
        parts["epochs"] = train_s
        sub = res.get("submitted")
        if sub:
            parts["startup"] = sub - t0w
        if all(k in tl for k in ("received", "setup", "evaluating", "done", "succeeded")) and sub:
            parts.update(queue=tl["received"] - sub, setup=tl["setup"] - tl["received"],
                         fit_other=tl["evaluating"] - tl["setup"] - train_s, eval_save=tl["done"] - tl["evaluating"],
                         bookkeeping=tl["succeeded"] - tl["done"], tail=t1w - tl["succeeded"])
        return {"job_id": res["job_id"], "client_seconds": client, "wall_seconds": res.get("wall_seconds"),
                "train_seconds": train_s, "test_accuracy": res.get("test_accuracy"), "epochs": res.get("epochs"),
                "model": res.get("model"), "model_path": res.get("model_path"), "worker": res.get("worker"),
                "train_images": res.get("train_images"), "history": res.get("history"),
                "task_runtime": tl.get("runtime"), "parts": parts, "args": args, "cpu": cpu,
                "member_accuracies": res.get("member_accuracies") or [], "members": res.get("members") or [],
                "warnings": res.get("warnings") or []}

    def bare_train(self, args: list[str], extra_env: dict | None = None) -> dict:
        """bench/bare_keras.py ARGS in a fresh process; its JSON plus the process's wall time."""
        env = {**self.env, **(extra_env or {})}
        meter = self.meter()
        t = time.perf_counter()
        proc = subprocess.run([self.python, str(BENCH / "bare_keras.py"), *args], env=env, capture_output=True,
                              text=True, timeout=self.args.timeout, stdin=subprocess.DEVNULL)
        total = time.perf_counter() - t
        cpu = meter.stop()
        if proc.returncode != 0:
            raise RuntimeError(f"bare_keras.py {' '.join(args)} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
        res = last_json(proc.stdout)
        ph = res["phases_seconds"]
        res["process_seconds"] = total
        res["cpu"] = cpu
        res["parts"] = {
            "startup": total - res["internal_seconds"] + ph["import"],
            "queue": None,
            "setup": ph["data"],
            "fit_other": ph["setup"] + ph["fit"] - res["train_seconds"],
            "epochs": res["train_seconds"],
            "eval_save": ph["eval"] + ph["save"],
            "bookkeeping": None,
            "tail": res["internal_seconds"] - sum(ph.values()),
        }
        return res

    def finished_job(self, job_id: str) -> dict:
        """A finished job's result (`digitq status ID --json`) and request, shaped like service_train's."""
        res = last_json(self.cli(["status", job_id, "--json"]).stdout)
        if res.get("state") != "SUCCESS":
            raise RuntimeError(f"job {job_id} is {res.get('state')}, not SUCCESS")
        folder = self.home / "jobs" / job_id
        request = json.loads((folder / "request.json").read_text())
        finished = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime((folder / "result.json").stat().st_mtime))
        return {**res, "request": request, "client_seconds": None, "cpu": None,
                "reused": {"job_id": job_id, "finished": finished}}

    def service_train_to_target(self, args: list[str], target: float, epochs: int) -> dict:
        """`digitq submit-train ARGS` (no --wait: it prints the job id), the job's history.json polled until
        its tracked test accuracy first reaches `target`, then `digitq cancel`; a job that ends first is
        taken as it is. Returns the history and how the job ended."""
        from digitq.client.api import connect
        from digitq.common.names import FINISHED_STATES

        c = connect(start_local=False)
        offset = self.log_offset()
        meter = self.meter()
        t0 = time.perf_counter()
        lines = self.cli(["submit-train", *args]).stdout.split()
        if not lines:
            raise RuntimeError("`digitq submit-train` printed no job id")
        job_id = lines[-1]
        history_path = self.home / "jobs" / job_id / "history.json"
        # Room for the longest seed-cnn run on a busy machine: 240 s per epoch, plus 600 s.
        deadline = time.monotonic() + max(self.args.timeout, epochs * 240 + 600)
        self.log(f"job {job_id}: polling {history_path} for test accuracy >= {target:.4f}")
        seen = len(read_history(history_path))
        while True:
            history = read_history(history_path)
            for e in history[seen:]:
                self.log(f"  epoch {e['epoch']}: test accuracy {(e.get('test_accuracy') or 0) * 100:.2f}% after "
                         f"{e.get('train_elapsed') or 0:.0f} s of training")
            seen = len(history)
            hit = first_reaching(history, target)
            if hit:
                break
            st = c.status(job_id)
            if st.state in FINISHED_STATES:
                break
            if time.monotonic() > deadline:
                self.cli(["cancel", job_id], check=False)
                raise RuntimeError(f"job {job_id} neither reached {target} nor ended within the time limit")
            time.sleep(HISTORY_POLL)
        seen_seconds = time.perf_counter() - t0
        cancel_seconds = None
        if hit:
            t = time.perf_counter()
            self.cli(["cancel", job_id])
            # The worker looks at the cancel flag every second of training; it may be in a test pass.
            while (st := c.status(job_id)).state not in FINISHED_STATES:
                if time.perf_counter() - t > 600:
                    raise RuntimeError(f"job {job_id} still {st.state} 600 s after `digitq cancel`")
                time.sleep(0.25)
            cancel_seconds = time.perf_counter() - t
            self.log(f"job {job_id}: reached {target * 100:.1f}% at epoch {hit['epoch']}; cancelled, "
                     f"{st.state} {cancel_seconds:.1f} s later")
        client = time.perf_counter() - t0
        cpu = meter.stop()
        if st.state == "FAILURE":
            raise RuntimeError(f"job {job_id} failed: {st.error}")
        if st.state == "REVOKED" and not hit:
            raise RuntimeError(f"job {job_id} was cancelled by someone else")
        time.sleep(0.3)  # the worker's last log line
        result = st.to_dict() if st.state == "SUCCESS" else {}
        history = result.get("history") or read_history(history_path)
        m = None
        for _, msg in read_log(self.worker_log, offset):
            m = m or re.match(rf"^job {re.escape(job_id)}: \S+ on (\d+) ", msg)
        train_images = result.get("train_images") or (int(m.group(1)) if m else None)
        return {"job_id": job_id, "state": st.state, "history": history, "result": result,
                "stopped_at_target": st.state == "REVOKED", "client_seconds": client, "seen_seconds": seen_seconds,
                "cancel_seconds": cancel_seconds, "train_images": train_images, "cpu": cpu}

    def start_w2(self) -> tuple[str, str]:
        """A second worker against the embedded broker; returns (its node name, the embedded worker's)."""
        from digitq.client.api import connect

        c = connect(start_local=False)
        broker = (self.home / "local" / "broker.url").read_text().strip()
        env = {**self.env, "DIGITQ_BROKER_URL": broker}
        node = "w2@bench"
        log = open(self.out / "w2-worker.log", "ab")
        t = time.perf_counter()
        self.w2 = subprocess.Popen([self.python, "-m", "digitq.worker", "--hostname", node], env=env, stdout=log,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=str(self.home),
                                   start_new_session=True)
        self.meters.track([self.w2.pid])
        deadline = time.monotonic() + 300
        while not any(w.get("node") == node for w in c.workers()):
            if self.w2.poll() is not None:
                raise RuntimeError(f"the second worker exited with {self.w2.returncode}; see {self.out / 'w2-worker.log'}")
            if time.monotonic() > deadline:
                raise RuntimeError("the second worker did not announce itself within 300 s")
            time.sleep(0.5)
        others = [w["node"] for w in c.workers() if w.get("node") != node and w.get("node", "").startswith("local@")]
        if not others:
            raise RuntimeError("the embedded worker does not announce itself")
        self.log(f"second worker {node} (pid {self.w2.pid}) ready in {time.perf_counter() - t:.1f} s")
        return node, others[0]

    def stop_w2(self) -> None:
        if self.w2 is None or self.w2.poll() is not None:
            return
        self.meters.retire([self.w2.pid], child=True)
        self.w2.send_signal(signal.SIGTERM)
        try:
            self.w2.wait(30)
        except subprocess.TimeoutExpired:
            self.w2.kill()
            self.w2.wait(10)
        self.log("second worker stopped")

    def consume(self, node: str, on: bool) -> None:
        from digitq.client.api import connect

        app = connect(start_local=False).app
        fn = app.control.add_consumer if on else app.control.cancel_consumer
        replies = fn("train", destination=[node], reply=True, timeout=10)
        if not replies:
            raise RuntimeError(f"{node} did not answer {'add' if on else 'cancel'}_consumer")

    def concurrent_jobs(self, n: int, args: list[str]) -> dict:
        """n `digitq submit-train --json` clients started at once; wall time until the last one exits."""
        meter = self.meter()
        t = time.perf_counter()
        procs = [subprocess.Popen(self.digitq + ["submit-train", "--json", *args], env=self.env, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL) for _ in range(n)]
        outs = [p.communicate(timeout=self.args.timeout) for p in procs]
        total = time.perf_counter() - t
        cpu = meter.stop()
        jobs = []
        for p, (so, se) in zip(procs, outs):
            if p.returncode != 0:
                raise RuntimeError(f"submit-train exited {p.returncode}:\n{se[-2000:]}")
            r = last_json(so)
            jobs.append({"job_id": r["job_id"], "worker": r.get("worker"), "wall_seconds": r.get("wall_seconds"),
                         "train_seconds": r.get("train_seconds"), "train_images": r.get("train_images"),
                         "images_per_second": r["train_images"] / r["train_seconds"] if r.get("train_seconds") else None})
        return {"total_seconds": total, "jobs": jobs, "workers_used": sorted({j["worker"] for j in jobs}), "cpu": cpu,
                "images_per_second": sum(j["train_images"] for j in jobs) / total}

    def close(self) -> None:
        """The second worker and the embedded stack stopped; the scratch home removed unless --home named it."""
        self.stop_w2()
        self.local_down()
        self.log("embedded stack stopped")
        if not self.args.home:
            shutil.rmtree(self.scratch, ignore_errors=True)
