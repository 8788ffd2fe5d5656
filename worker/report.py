"""Training reports: PNG plots and a Markdown summary of one training job, drawn headless on a worker.

    paths = render_report(settings, job_id_or_registry_record, out_dir)
    result = run_report({"target": "digits:3"}, settings, r)    # the `digitq.report` task

Files (in `<job folder>/report/` for the task):

    curves.png         loss and accuracy per epoch, training and validation (a resumed epoch is marked)
    confusion.png      10 x 10 confusion matrix with counts: true digit in rows, predicted in columns
    misclassified.png  up to 64 wrongly classified MNIST test digits, most confident mistakes first
    samples.png        the first 32 MNIST test digits with the predicted digit and its confidence
    summary.md         model, architecture, epochs, test accuracy, per-class table, wall time, the plots

The galleries come from running the job's model on the MNIST test images it was scored on (the
first `test_size` of them), so they agree with the confusion matrix. Digits are shown as MNIST
stores them and the model sees them: white ink on black. matplotlib (Agg, via Figure objects, so
no pyplot state and no display) and TensorFlow are imported inside the functions that need them.
"""

from __future__ import annotations

import base64
import math
import os
import uuid
from pathlib import Path

import numpy as np

from digitq.common.errors import (DataError, DigitqError, InvalidRequest, NoSuchJob, NoSuchModel,
                                  WorkerNotInstalled)
from digitq.common.paths import resolve_within
from digitq.common.registry import resolve_model
from digitq.common.schemas import JOB_ID_RE, MODEL_NAME_RE, ReportRequest, ReportResult, check_job_id
from digitq.common.settings import Settings
from digitq.worker import job_folder

DPI = 100
"""Dots per inch of every PNG: figure sizes below are in pixels at this density."""

CURVES_SIZE = (1000, 400)
CONFUSION_SIZE = (720, 640)

GALLERY_COLUMNS = 8
GALLERY_CELL = (170, 150)
"""Pixels per gallery cell (width, height): a 112 x 112 digit (28 x 28 at 4x) and its title."""

GALLERY_HEADER = 50
"""Pixels above a gallery's cells, for its heading."""

DIGIT_SCALE = 4

MAX_MISCLASSIFIED = 64
SAMPLES = 32

REPORT_FILES = ("curves.png", "confusion.png", "misclassified.png", "samples.png", "summary.md")
"""What render_report writes, in this order."""

REPORT_DIR = "report"
"""The task's output folder inside the job folder."""

TRAIN_COLOUR, VAL_COLOUR, WRONG_COLOUR = "#1f77b4", "#ff7f0e", "#d62728"


def gallery_size(count: int) -> tuple[int, int]:
    """Width and height in pixels of a gallery of `count` digits (one empty row when there are none)."""
    rows = max(1, math.ceil(count / GALLERY_COLUMNS))
    return GALLERY_COLUMNS * GALLERY_CELL[0], GALLERY_HEADER + rows * GALLERY_CELL[1]


# --- the plots (NumPy and matplotlib only: no TensorFlow) ----------------------------------------


def _figure(size_px: tuple[int, int], **kwargs):
    try:
        from matplotlib.figure import Figure  # a bare Figure draws with Agg; pyplot (and a display) never loads
    except ImportError:
        raise WorkerNotInstalled("reports need matplotlib on the worker: pip install 'digitq[worker]'") from None

    return Figure(figsize=(size_px[0] / DPI, size_px[1] / DPI), dpi=DPI, **kwargs)


def _temp_name(path: Path) -> Path:
    """A hidden name beside `path`, unique to this writer: two workers may render one job's report at once."""
    return path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.partial")


def _save(fig, path: Path) -> Path:
    """PNG at exactly the figure's size, written under a temporary name and renamed."""
    tmp = _temp_name(path)
    try:
        fig.savefig(tmp, format="png", dpi=DPI, facecolor="white")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _series(history: list, key: str) -> tuple[list, list]:
    """(epochs, values) of one metric, skipping epochs where it is missing or not finite."""
    xs, ys = [], []
    for e in history:
        v = e.get(key)
        if isinstance(v, (int, float)) and math.isfinite(v):
            xs.append(e["epoch"])
            ys.append(float(v))
    return xs, ys


def _by_member(history: list) -> list[tuple[int | None, list]]:
    """[(member or None, its entries)]: one group for a single model, one per model of an ensemble."""
    groups: dict = {}
    for e in history:
        groups.setdefault(e.get("member"), []).append(e)
    return sorted(groups.items(), key=lambda kv: kv[0] or 0)


def plot_curves(history: list, path: Path, title: str) -> Path:
    """Loss (left) and accuracy (right) per epoch, training and validation; a resumed epoch is marked.

    An ensemble's history (entries with `member`) gets one thinner line per model, labelled once.
    """
    fig = _figure(CURVES_SIZE, layout="constrained")
    from matplotlib.ticker import MaxNLocator, PercentFormatter

    fig.suptitle(title, fontsize=12)
    ax_loss, ax_acc = fig.subplots(1, 2)
    n = max([e.get("epoch", 0) for e in history] or [1])
    groups = _by_member(history)
    many = len(groups) > 1
    for ax, key, label in ((ax_loss, "loss", "loss (cross-entropy)"), (ax_acc, "accuracy", "accuracy")):
        scale = 100.0 if key == "accuracy" else 1.0
        for prefix, name, colour, style in (("", "training", TRAIN_COLOUR, "o-"),
                                            ("val_", "validation", VAL_COLOUR, "s--")):
            for g, (_member, entries) in enumerate(groups):
                xs, ys = _series(entries, prefix + key)
                if not xs:
                    continue
                legend = (f"{name} (each of {len(groups)} models)" if many else name) if g == 0 else None
                ax.plot(xs, [y * scale for y in ys], style, color=colour, label=legend,
                        markersize=(5 if n <= 20 else 2.5) * (0.7 if many else 1), linewidth=1.1 if many else 1.8,
                        alpha=0.75 if many else 1.0)
        for member, entries in groups:
            for e in entries:
                if e.get("resumed"):
                    which = f" (model {member})" if member else ""
                    ax.axvline(e["epoch"] - 0.5, color="#555555", linestyle=":", linewidth=1.5,
                               label=f"resumed at epoch {e['epoch']}{which}")
        ax.set_title(label.capitalize(), fontsize=11)
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.set_xlim(0.5, n + 0.5)
        if n <= 12:
            ax.set_xticks(range(1, n + 1))
        else:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(True, alpha=0.3)
        if key == "accuracy":
            ax.yaxis.set_major_formatter(PercentFormatter(decimals=None))
        if ax.has_data():
            ax.legend(fontsize=9, loc="best")
        else:
            ax.set_xticks([])
            ax.set_yticks([])
            ax.text(0.5, 0.5, "no per-epoch history", transform=ax.transAxes, ha="center", va="center", color="grey")
    return _save(fig, path)


def plot_confusion(confusion, path: Path, title: str) -> Path:
    """Heatmap of the confusion counts (rows = true digit, columns = predicted), each cell labelled.

    The colour is the share of the true digit's images (square-root scale, so the few mistakes
    are visible next to the diagonal); the numbers are counts.
    """
    counts = np.asarray(confusion, dtype=np.int64).reshape(10, 10)
    totals = counts.sum(axis=1, keepdims=True)
    share = np.divide(counts, totals, out=np.zeros((10, 10)), where=totals > 0)
    fig = _figure(CONFUSION_SIZE, layout="constrained")
    from matplotlib.colors import PowerNorm

    ax = fig.subplots()
    im = ax.imshow(share, cmap="Blues", norm=PowerNorm(0.5, vmin=0, vmax=1), origin="upper")
    bar = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03)
    bar.set_label("share of the true digit's test images")
    bar.set_ticks([0, 0.01, 0.05, 0.2, 0.5, 1.0])
    bar.set_ticklabels(["0", "1%", "5%", "20%", "50%", "100%"])
    size = 9 if counts.max() < 10000 else 7
    for t in range(10):
        for p in range(10):
            c = int(counts[t, p])
            colour = "white" if share[t, p] > 0.35 else ("#bbbbbb" if c == 0 else "black")
            ax.text(p, t, str(c), ha="center", va="center", fontsize=size, color=colour,
                    fontweight="bold" if t == p else "normal")
    ax.set_xticks(range(10))
    ax.set_yticks(range(10))
    ax.set_xlabel("predicted digit", fontsize=11)
    ax.set_ylabel("true digit", fontsize=11)
    ax.xaxis.set_label_position("top")
    ax.xaxis.tick_top()
    ax.set_title(title, fontsize=11, pad=10)
    ax.tick_params(length=0)
    return _save(fig, path)


def plot_digit_gallery(images: np.ndarray, titles: list[str], path: Path, heading: str,
                       wrong: list[bool] | None = None, empty_text: str = "no digits") -> Path:
    """A grid of 28 x 28 digits (white on black, 4x, pixel for pixel), each titled; `wrong` ones framed in red."""
    count = len(images)
    width, height = gallery_size(count)
    cell_w, cell_h = GALLERY_CELL
    side = 28 * DIGIT_SCALE
    fig = _figure((width, height))
    fig.text(0.5, 1 - (GALLERY_HEADER / 2) / height, heading, ha="center", va="center", fontsize=12)
    if count == 0:
        fig.text(0.5, (height - GALLERY_HEADER) / 2 / height, empty_text, ha="center", va="center", fontsize=11,
                 color="grey")
    for i in range(count):
        row, col = divmod(i, GALLERY_COLUMNS)
        left = col * cell_w + (cell_w - side) / 2
        top = GALLERY_HEADER + row * cell_h + 26  # the title sits in the 26 px above the digit
        ax = fig.add_axes((left / width, 1 - (top + side) / height, side / width, side / height))
        ax.imshow(images[i], cmap="gray", vmin=0, vmax=255, interpolation="nearest", origin="upper")
        ax.set_xticks([])
        ax.set_yticks([])
        is_wrong = bool(wrong and wrong[i])
        for spine in ax.spines.values():
            spine.set_visible(is_wrong)
            spine.set_color(WRONG_COLOUR)
            spine.set_linewidth(2.5)
        ax.set_title(titles[i], fontsize=9, pad=4, color=WRONG_COLOUR if is_wrong else "black")
    return _save(fig, path)


def _pct(x: float) -> str:
    """A confidence as a percentage that never rounds up to certainty (0.99971 -> '>99.9%')."""
    p = float(x) * 100
    if 99.95 <= p < 100:
        return ">99.9%"
    return f"{p:.1f}%" if 99 <= p < 100 else f"{p:.0f}%"


# --- one job's data --------------------------------------------------------------------------


def _job_of(settings: Settings, record_or_job) -> tuple[str, dict | None]:
    """(job id, registry record or None) for a job id or a record from resolve_model."""
    if isinstance(record_or_job, dict):
        job_id = record_or_job.get("job_id")
        if not job_id:
            raise DataError(f"model {record_or_job.get('name')}:{record_or_job.get('version')} "
                            "was not made by a training job, so it has no job to report on")
        return check_job_id(job_id), record_or_job
    return check_job_id(record_or_job), None


def _model_paths(settings: Settings, folder: Path, record: dict | None, request: dict) -> list[Path]:
    """The model file(s) to run: the record's (as `digitq predict` would), else the job folder's own
    `model.keras`, or an ensemble's `member-<k>/model.keras`."""
    if record:
        paths = record.get("members") or [record["path"]]
    else:
        k = request.get("ensemble") or 1
        paths = [folder / "model.keras"] if k == 1 else [folder / f"member-{i}" / "model.keras" for i in range(k)]
    return [resolve_within(p, [settings.home]) for p in paths]


def _load_history(folder: Path, result: dict | None, members: int) -> list:
    """Per-epoch entries; an ensemble's carry `member` (1..K), as in its result.json."""
    if members > 1:
        if result and result.get("history"):
            return result["history"]
        return [{**e, "member": k + 1} for k in range(members)
                for e in job_folder.read_json(folder / f"member-{k}" / "history.json", [])]
    return job_folder.read_json(folder / "history.json") or (result or {}).get("history") or []


def load_job(settings: Settings, record_or_job) -> dict:
    """A job's stored files: {"job_id", "folder", "record", "request", "history", "result", "model_paths"}."""
    job_id, record = _job_of(settings, record_or_job)
    folder = job_folder.job_dir(settings, job_id)
    if not folder.is_dir():
        raise NoSuchJob(f"job {job_id} has no folder on the shared volume ({folder})")
    result = job_folder.read_json(folder / "result.json")
    request = job_folder.read_json(folder / "request.json", {})
    paths = _model_paths(settings, folder, record, request)
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise DataError(f"job {job_id} has no model file yet ({missing[0]}): it is still running, or it failed")
    if record is None:
        record = {"name": None, "version": None, "job_id": job_id, "path": str(paths[0] if len(paths) == 1 else folder),
                  "members": [str(p) for p in paths] if len(paths) > 1 else []}
    return {
        "job_id": job_id,
        "folder": folder,
        "record": record,
        "request": request,
        "history": _load_history(folder, result, len(paths)),
        "result": result,
        "model_paths": paths,
    }


def _model_label(job: dict) -> str:
    rec, res = job["record"], job["result"] or {}
    if rec.get("name"):
        return f"{rec['name']}:{rec['version']}"
    return res.get("model") or f"job {job['job_id']}"


def _classify_test_set(settings: Settings, job: dict) -> dict:
    """The model's predictions on the MNIST test images the job was scored on."""
    from digitq.worker.data import load_mnist
    from digitq.worker.predict import CACHE, predict_pixels

    m = load_mnist(settings)
    n = job["request"].get("test_size") or len(m["test_labels"])
    x, y = m["test_images"][:n], m["test_labels"][:n].astype(np.int64)
    probs = predict_pixels(settings, job["record"], x, exact=True)  # the training's own figures
    model = CACHE.get(job["model_paths"][0], settings, exact=True)  # the members of an ensemble are alike
    return {"x": x, "y": y, "probs": probs, "predicted": probs.argmax(axis=1), "params": int(model.count_params()),
            "models": len(job["model_paths"])}


def _confusion(job: dict, pred: dict) -> np.ndarray:
    """result.json's matrix when it covers these test images, else the one just computed."""
    stored = (job["result"] or {}).get("confusion")
    if stored and np.asarray(stored).shape == (10, 10) and int(np.sum(stored)) == len(pred["y"]):
        return np.asarray(stored, dtype=np.int64)
    counts = np.zeros((10, 10), dtype=np.int64)
    np.add.at(counts, (pred["y"], pred["predicted"]), 1)
    return counts


def render_report(settings: Settings, record_or_job, out_dir) -> list[Path]:
    """Write the report of one training job into `out_dir` and return the files' paths.

    Args:
        record_or_job: a job id (its folder is under settings.jobs_dir), or a registry record
            (from resolve_model) of a model a training job made.
        out_dir: created if missing; files already there with the same names are replaced.
    """
    import importlib.util

    if importlib.util.find_spec("matplotlib") is None:  # say so before the model runs, not after
        raise WorkerNotInstalled("reports need matplotlib on the worker: pip install 'digitq[worker]'")
    job = load_job(settings, record_or_job)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    label = _model_label(job)
    arch = (job["result"] or {}).get("arch") or job["request"].get("arch") or job["record"].get("arch") or "?"
    pred = _classify_test_set(settings, job)
    confusion = _confusion(job, pred)
    n = len(pred["y"])
    accuracy = float(np.trace(confusion) / n) if n else float("nan")
    conf = pred["probs"].max(axis=1)
    epochs = max([e.get("epoch", 0) for e in job["history"]] or [0])

    kind = f"ensemble of {pred['models']} x {arch}" if pred["models"] > 1 else arch
    paths = [plot_curves(job["history"], out / "curves.png",
                         f"{label} ({kind}): {epochs} epoch{'s' * (epochs != 1)}, test accuracy {accuracy * 100:.2f}%"),
             plot_confusion(confusion, out / "confusion.png",
                            f"{label}: {n:,} MNIST test images, accuracy {accuracy * 100:.2f}%")]

    all_wrong = np.flatnonzero(pred["predicted"] != pred["y"])
    wrong = all_wrong[np.argsort(-conf[all_wrong], kind="stable")][:MAX_MISCLASSIFIED]  # most confident first
    paths.append(plot_digit_gallery(
        pred["x"][wrong],
        [f"true {pred['y'][i]} / pred {pred['predicted'][i]} ({_pct(conf[i])})" for i in wrong],
        out / "misclassified.png",
        _misclassified_heading(label, len(wrong), len(all_wrong), n),
        empty_text=f"no misclassified digits among the {n:,} test images"))

    shown = np.arange(min(SAMPLES, n))
    titles = []
    for i in shown:
        p, t = pred["predicted"][i], pred["y"][i]
        titles.append(f"pred {p} ({_pct(conf[i])})" + (f", true {t}" if p != t else ""))
    paths.append(plot_digit_gallery(
        pred["x"][shown], titles, out / "samples.png",
        f"{label}: the first {len(shown)} test digits, predicted digit and confidence (red: wrong)",
        wrong=[bool(pred["predicted"][i] != pred["y"][i]) for i in shown]))

    paths.append(_write_summary(out / "summary.md", job, label, arch, pred, confusion))
    return paths


def _misclassified_heading(label: str, shown: int, wrong: int, total: int) -> str:
    if shown < wrong:
        return f"{label}: the {shown} most confident of {wrong:,} mistakes on {total:,} test digits"
    return f"{label}: all {wrong:,} misclassified of {total:,} test digits, most confident first"


def _write_summary(path: Path, job: dict, label: str, arch: str, pred: dict, confusion: np.ndarray) -> Path:
    res, req, history = job["result"] or {}, job["request"], job["history"]
    n = int(confusion.sum())
    accuracy = np.trace(confusion) / n if n else float("nan")
    arch_text, hp_text = _describe_model(arch, req, pred["params"], pred["models"])
    resumed = [f"{e['epoch']}" + (f" of model {e['member']}" if e.get("member") else "")
               for e in history if e.get("resumed")]
    epochs = max([e.get("epoch", 0) for e in history] or [0])
    epochs_text = str(epochs) + (" per model" if pred["models"] > 1 else "")
    epochs_text += f" (resumed at epoch {', '.join(resumed)})" if resumed else ""
    train_seconds = res.get("train_seconds", sum(e.get("seconds", 0) for e in history))
    wall = res.get("wall_seconds")
    lines = [
        f"# Training report: {label}",
        "",
        "| | |",
        "| --- | --- |",
        f"| model | {label} |",
        f"| job | `{job['job_id']}` |",
        f"| architecture | {arch_text} |",
        f"| hyperparameters | {hp_text} |",
        f"| dataset | {res.get('dataset') or req.get('dataset', 'mnist')}"
        + (f", {res['train_images']:,} training images" if res.get("train_images") else "") + " |",
        f"| epochs | {epochs_text} |",
        f"| test accuracy | {accuracy * 100:.2f}% on {n:,} MNIST test images"
        + (f" (loss {res['test_loss']:.4f})" if isinstance(res.get("test_loss"), (int, float)) else "") + " |",
        f"| wall time | {_duration(wall) if wall is not None else 'unknown'} (training {_duration(train_seconds)}) |",
    ]
    if res.get("member_accuracies"):
        each = ", ".join(f"{a * 100:.2f}%" for a in res["member_accuracies"])
        lines.append(f"| each model alone | {each} |")
    if res.get("devices"):
        lines.append(f"| devices | {res.get('replicas', 1)} replica(s) on {', '.join(res['devices'])} |")
    lines += ["", "## Per-class accuracy", "", "| digit | test images | correct | accuracy | most often mistaken for |",
              "| ---: | ---: | ---: | ---: | --- |"]
    for d in range(10):
        total, right = int(confusion[d].sum()), int(confusion[d, d])
        others = confusion[d].copy()
        others[d] = 0
        worst = int(others.argmax())
        mistaken = f"{worst} ({int(others[worst])}x)" if others[worst] else "-"
        acc = f"{right / total * 100:.2f}%" if total else "-"
        lines.append(f"| {d} | {total:,} | {right:,} | {acc} | {mistaken} |")
    lines += ["", "## Plots", "",
              "![Loss and accuracy per epoch](curves.png)", "",
              "![Confusion matrix](confusion.png)", "",
              "![Misclassified test digits](misclassified.png)", "",
              "![Sample predictions](samples.png)", "",
              "Files: [curves.png](curves.png), [confusion.png](confusion.png), "
              "[misclassified.png](misclassified.png), [samples.png](samples.png)", ""]
    tmp = _temp_name(path)
    try:
        tmp.write_text("\n".join(lines))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _describe_model(arch: str, request: dict, params: int, models: int = 1) -> tuple[str, str]:
    """('`cnn`, conv channels 32-64-128, 290,000 parameters', 'batch 128 per replica, ...') from request.json."""
    ensemble = f"ensemble of {models} averaged models, each " if models > 1 else ""
    try:
        from digitq.common.schemas import TrainRequest
        from digitq.worker.model import resolve_hparams

        hp = resolve_hparams(TrainRequest.from_dict(request))
    except Exception:  # an older or hand-made request.json: show what the model itself says
        return f"{ensemble}`{arch}`, {params:,} parameters", "-"
    parts = [f"{ensemble}`{hp.arch}`"]
    if hp.conv_channels:
        parts.append("conv channels " + "-".join(map(str, hp.conv_channels)))
    if hp.dense_units:
        parts.append(f"dense {hp.dense_units}")
    parts.append(f"{params:,} parameters")
    hps = [f"batch {hp.batch_size} per replica", f"learning rate {hp.learning_rate:g} ({hp.schedule})",
           f"dropout {hp.dropout:g}", f"label smoothing {hp.label_smoothing:g}", f"weight decay {hp.weight_decay:g}",
           f"augmentation {getattr(hp, 'augment', None) or 'none'}", f"seed {request.get('seed', 0)}"]
    if getattr(hp, "ema", 0):
        hps.insert(-1, f"weights averaged (momentum {hp.ema:g})")
    return ", ".join(parts), ", ".join(hps)


def _duration(seconds: float) -> str:
    seconds = float(seconds)
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, s = divmod(int(round(seconds)), 60)
    return f"{minutes} min {s} s" if minutes < 60 else f"{minutes // 60} h {minutes % 60} min"


# --- the digitq.report task ------------------------------------------------------------------


def resolve_target(target, settings: Settings, r) -> str | dict:
    """A job id, or the registry record of 'NAME[:VERSION]'.

    'NAME:VERSION' is always a model. A bare word is a registered model name if one exists, else a
    job id (job ids are the 32-hex Celery task ids, which nobody picks as a model name).
    """
    if not isinstance(target, str) or not target:
        raise InvalidRequest(f"a report target must be a job id or NAME[:VERSION], got {target!r}")
    if ":" in target:
        return resolve_model(r, target)
    if MODEL_NAME_RE.match(target):
        try:
            return resolve_model(r, target)
        except NoSuchModel:
            if not JOB_ID_RE.match(target):
                raise
    check_job_id(target)
    if not (settings.jobs_dir / target).is_dir():
        raise NoSuchJob(f"no model or job named {target!r} (see `digitq models list` and `digitq jobs`)")
    return target


def run_report(payload, settings: Settings, r) -> dict:
    """The `digitq.report` task: render a job's report into `<job folder>/report/` and return
    {"job_id", "model", "folder", "files": {name: base64 of the file's bytes}}."""
    target = ReportRequest.from_dict(payload).target
    from digitq.worker.sweep_report import is_sweep, run_sweep_report

    if is_sweep(r, target):  # a sweep's report: digitq.worker.sweep_report
        return run_sweep_report(target, settings, r)
    record_or_job = resolve_target(target, settings, r)
    job_id, _ = _job_of(settings, record_or_job)
    folder = job_folder.job_dir(settings, job_id) / REPORT_DIR
    paths = render_report(settings, record_or_job, folder)
    if isinstance(record_or_job, dict):
        label = f"{record_or_job['name']}:{record_or_job['version']}"
    else:
        label = (job_folder.read_json(folder.parent / "result.json") or {}).get("model") or None
    try:
        files = {p.name: base64.b64encode(p.read_bytes()).decode() for p in paths}
    except OSError as exc:
        raise DigitqError(f"cannot read the report back from {folder}: {exc}") from None
    return ReportResult(job_id=job_id, model=label, folder=str(folder), files=files).to_dict()
