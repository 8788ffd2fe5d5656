"""Live progress for `--wait`: a rich progress bar fed by the job's PROGRESS reports."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from digitq.client.api import JobStatus


class TrainProgress:
    """Renders epoch, batch, loss, accuracy and ETA of one training job."""

    def __init__(self, console: Console):
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(bar_width=30),
            TextColumn("{task.fields[detail]}"),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        )
        self.task = None
        self._state = None

    def __enter__(self):
        self.progress.__enter__()
        self.task = self.progress.add_task("queued", total=None, detail="")
        return self

    def __exit__(self, *exc):
        self.progress.__exit__(*exc)

    def update(self, st: JobStatus) -> None:
        p = st.progress or {}
        if st.state in ("PENDING", "PROGRESS") and p.get("ensemble"):
            self._update_ensemble(p)
            return
        if st.state in ("PENDING", "STARTED", "RECEIVED") or (st.state == "PROGRESS" and p.get("phase") != "train"):
            label = {"PENDING": "queued", "STARTED": "starting"}.get(st.state, p.get("phase", st.state.lower()))
            self.progress.update(self.task, description=label, detail="")
            return
        if st.state == "PROGRESS":
            epochs, batches = p.get("epochs", 1), p.get("batches", 1)
            done = (p.get("epoch", 1) - 1) * batches + p.get("batch", 0)
            parts = [f"batch {p.get('batch', 0)}/{batches}"]
            if "loss" in p:
                parts.append(f"loss {p['loss']:.4f}")
            if "accuracy" in p:
                parts.append(f"acc {p['accuracy']:.4f}")
            if "val_accuracy" in p:
                parts.append(f"val_acc {p['val_accuracy']:.4f}")
            if p.get("images_per_second"):
                parts.append(f"{p['images_per_second']:.0f} img/s")
            if p.get("eta") is not None:
                parts.append(f"ETA {_fmt_seconds(p['eta'])}")
            label = f"epoch {p.get('epoch')}/{epochs}"
            if p.get("members"):
                label = f"model {p['member']}/{p['members']} {label}"
                done += (p["member"] - 1) * epochs * batches
                epochs *= p["members"]
            self.progress.update(self.task, description=label, total=epochs * batches, completed=done,
                                 detail="  ".join(parts))
        elif st.state == "SUCCESS":
            t = self.progress.tasks[0]
            self.progress.update(self.task, description="done", completed=t.total or 1, total=t.total or 1)


    def _update_ensemble(self, p: dict) -> None:
        """An ensemble's members (digitq.common.ensemble.parent_progress): e.g. `member 2/5 epoch
        3/5` (the running member furthest behind), `members 1,2/5` when several run, and how many
        are done."""
        k, running = p["ensemble"], p.get("running") or []
        who = f"member {running[0]}/{k}" if len(running) == 1 else (
            f"members {','.join(map(str, running))}/{k}" if running else f"members -/{k}")
        detail = [f"{p.get('members_done', 0)}/{k} done"]
        if p.get("phase") != "train":
            self.progress.update(self.task, description=f"{who} {p.get('phase', 'queued')}" if running else "queued",
                                 detail="  ".join(detail))
            return
        detail.append(f"batch {p.get('batch', 0)}/{p.get('batches', 1)}")
        for key, name in (("loss", "loss"), ("accuracy", "acc"), ("val_accuracy", "val_acc")):
            if key in p:
                detail.append(f"{name} {p[key]:.4f}")
        self.progress.update(self.task, description=f"{who} epoch {p.get('epoch')}/{p.get('epochs', 1)}",
                             total=p.get("total_batches") or None, completed=p.get("completed_batches", 0),
                             detail="  ".join(detail))


def _fmt_seconds(s: float) -> str:
    s = int(round(s))
    return f"{s // 60}:{s % 60:02d}"
