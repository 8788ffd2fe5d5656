"""What the live workers announce in Redis: `digitq:worker:<node>`, a JSON object (node, host,
pid, queues, devices, volume, current job) that digitq.worker.presence keeps fresh within its
TTL. Read by the client (`digitq workers`, "is a worker alive?"), by ensembles (how many
members at once), by the shared-volume check and by the embedded stack."""

from __future__ import annotations

import json

from digitq.common.names import TRAIN_QUEUE, WORKER_KEY_PREFIX


def announced(r) -> list[dict]:
    """The live workers' announcements, in node order; one that does not parse is skipped."""
    out = []
    for key in sorted(r.scan_iter(match=WORKER_KEY_PREFIX + "*", count=200)):
        raw = r.get(key)
        try:
            info = json.loads(raw) if raw else None
        except ValueError:
            continue
        if isinstance(info, dict):
            out.append(info)
    return out


def live_train_workers(r) -> int:
    """Live workers that serve the train queue."""
    return sum(1 for w in announced(r) if TRAIN_QUEUE in (w.get("queues") or []))
