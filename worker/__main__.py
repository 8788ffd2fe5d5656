"""`digitq-worker` / `python -m digitq.worker`: one Celery worker process that owns this machine's GPUs.

The worker sets itself up here, when it starts, in this order: TensorFlow's CPU kernels and the
GPU selection (both read only when TensorFlow starts, so before anything imports it), the
settings, the Redis client and the Celery app with digitq's tasks (digitq.worker.app), then the
devices. With one process (the default) the solo pool runs jobs in this very process: TensorFlow
is set up once, here, before anything could fork. With --concurrency > 1 (CPU prediction
workers) each pool child inherits the environment and sets its devices up itself.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys

from digitq.common.errors import DigitqError
from digitq.common.names import ALL_QUEUES
from digitq.common.settings import load_settings
from digitq.worker.devices import prefer_onednn


def main(argv: list[str] | None = None) -> int:
    prefer_onednn()  # before anything imports TensorFlow
    p = argparse.ArgumentParser(prog="digitq-worker", description=__doc__.splitlines()[0])
    p.add_argument("--queues", default=",".join(ALL_QUEUES), help="comma-separated queues to serve (train,predict)")
    p.add_argument("--concurrency", type=int, default=1, help="job processes (1 = solo, for GPU machines)")
    p.add_argument("--hostname", default=f"digitq@{socket.gethostname()}", help="Celery node name")
    p.add_argument("--loglevel", default="INFO")
    p.add_argument("--gpus", default=None, help="GPUs this worker owns, e.g. 0,1 or all (sets DIGITQ_GPUS)")
    args = p.parse_args(argv)
    logging.basicConfig(level=args.loglevel.upper(), format="[%(asctime)s %(levelname)s %(name)s] %(message)s")
    try:
        queues = [q.strip() for q in args.queues.split(",") if q.strip()]
        unknown = sorted(set(queues) - set(ALL_QUEUES))
        if unknown or not queues:
            raise DigitqError(f"unknown queue(s) {', '.join(unknown) or '(none)'}: choose from {', '.join(ALL_QUEUES)}")
        if args.concurrency < 1:
            raise DigitqError(f"--concurrency must be >= 1, got {args.concurrency}")
        if args.gpus is not None:
            os.environ["DIGITQ_GPUS"] = args.gpus  # before TensorFlow is imported, via select_gpus_env
        settings = load_settings()
        from digitq.worker.devices import configure_devices, select_gpus_env

        select_gpus_env(settings)  # before TensorFlow is imported anywhere
        from digitq.worker.app import WorkerContext, make_worker_app

        ctx = WorkerContext.connect(settings, queues)
        app = make_worker_app(ctx)
        if args.concurrency == 1:
            info = configure_devices(settings)
            logging.getLogger("digitq.worker").info("devices: %s", info)
            ctx.devices.update(info)
            pool = ["-P", "solo"]
        else:
            pool = ["-P", "prefork", "-c", str(args.concurrency)]
    except DigitqError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    code = 0
    try:
        app.worker_main(["worker", *pool, "-Q", ",".join(queues), "-n", args.hostname, "-l", args.loglevel,
                         "--without-gossip", "--without-mingle"])
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    _exit_at_once(code)
    return code


def _exit_at_once(code: int) -> None:
    """Exit now that Celery has stopped (a running training job handed back, connections
    closed): the interpreter's own teardown of TensorFlow takes seconds more (6 s measured for
    an idle CPU worker) that a `docker stop` grace period should not pay. Logs are flushed first."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    sys.exit(main())
