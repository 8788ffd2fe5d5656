"""Prediction throughput: bench/predict_throughput.py, `digitq predict` against bare Keras and the
tutorials' per-image loop."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from benchkit.config import BENCH
from benchkit.harness import Harness
from benchkit.plotting import save, title
from benchkit.section import Context, Result, Section


@dataclass
class PredictResult(Result):
    report: dict
    """predict_throughput.py's own JSON (n, png_size, model, results, goals, profile, ...)."""
    how_model: str
    """Where the model came from, in words."""

    def to_dict(self) -> dict:
        return {**self.report, "how_model": self.how_model}

    @classmethod
    def from_dict(cls, data: dict):
        return cls(report={k: v for k, v in data.items() if k not in ("stamp", "how_model")},
                   how_model=data["how_model"])


def run(h: Harness) -> PredictResult:
    """bench/predict_throughput.py on the warm stack, with the time-to-accuracy cnn unless --predict-train."""
    a = h.args
    h.ensure_warm()
    out_json = h.out / "predict.json"
    argv = [h.python, str(BENCH / "predict_throughput.py"), "-n", str(a.predict_n),
            "--loop-sample", str(50 if a.quick else 300), "--repeats", str(a.repeats), "--out", str(out_json),
            "--home", str(h.home), "--data-dir", str(h.data_dir), "--keep", "--timeout", str(a.timeout)]
    ref = h.models.get("tta-cnn")
    if ref and not a.predict_train:
        argv += ["--model-ref", ref]
        how = (f"reused from the time-to-accuracy benchmark (default cnn, {a.cnn_epochs} epochs; "
               "--predict-train trains a 3-epoch one instead)")
    else:
        train = ["--epochs", "3", *a.data_args, "--name", "bench-predict"]
        argv += ["--train-args", shlex.join(train)]
        how = "trained by predict_throughput.py: digitq submit-train " + shlex.join(train)
    h.log(f"predict_throughput.py -n {a.predict_n} ({how})")
    out_json.unlink(missing_ok=True)
    proc = subprocess.run(argv, env=h.env, capture_output=True, text=True, timeout=a.timeout * 2,
                          stdin=subprocess.DEVNULL)
    (h.out / "predict.log").write_text(proc.stdout + "\n--- stderr ---\n" + proc.stderr)
    m = re.search(r"scratch (\S+), DIGITQ_HOME", proc.stderr)
    if m and Path(m.group(1)).name.startswith("digitq-bench-"):
        shutil.rmtree(m.group(1), ignore_errors=True)  # --keep kept it (and the stack, which we still use)
    if proc.returncode != 0:
        raise RuntimeError(f"predict_throughput.py exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    res = PredictResult(report=json.loads(out_json.read_text()), how_model=how)
    r = res.report["results"]
    h.log(f"(a) {r['a']['images_per_second']:,.0f}, (b) {r['b']['images_per_second']:,.0f}, "
          f"(c) {r['c']['images_per_second']:,.0f} images/s")
    return res


def render(res: dict, ctx: Context) -> list[str]:
    r, mdl = res["results"], res["model"]
    L = [f"`bench/predict_throughput.py` (run by the suite with `-n {res['n']}`; its own JSON is "
         "`bench/results/predict.json`): the same model and the same MNIST test digits, written as real "
         f"{res['png_size']}x{res['png_size']} PNG files (dark ink on white), through (a) bare Keras `model.predict` on the",
         "decoded arrays, (b) the tutorials' per-image loop (PIL, invert, `model.predict` per image), (c)",
         "`digitq predict FOLDER` end to end on the warm embedded stack, (d) bare Keras on the same PNG files",
         "(PIL decode of every file, then one `model.predict`; model loading excluded) and (e) the same as a",
         "script in a fresh process (import Keras, load the model, decode, predict, write a CSV), timed as (c) is.", "",
         f"Model: `{mdl['model']}`, {res.get('how_model', '')}; its test accuracy at training: "
         f"{(mdl.get('test_accuracy') or float('nan')) * 100:.2f}%.", "",
         ]
    from predict_throughput import result_tables  # bench/ is on sys.path, as benchkit's home

    L += result_tables(res)
    L += ["", f"Accuracy of this model on the PNGs through `digitq predict`: **{r['c']['accuracy'] * 100:.2f}%**; on the "
          f"decoded test arrays (bare Keras): **{r['a']['accuracy'] * 100:.2f}%** (first {res['n']:,} test digits).", ""]
    p = res.get("profile")
    if p:
        L += ["Where (c)'s time goes (median run):", "", "| part | seconds | share of (c) wall |", "| --- | ---: | ---: |"]
        wall = r["c"]["median_seconds"]
        for label, sec in p["parts"]:
            share = f"{sec / wall * 100:.0f}%" if sec is not None and sec == sec and wall else "-"
            L.append(f"| {label} | {sec:.3f} | {share} |")
        L.append("")
    return L



def plot(res: dict, path: Path, ctx: Context) -> None:
    import matplotlib.pyplot as plt

    r = res["results"]
    names = {"a": "(a) bare Keras\nmodel.predict", "b": "(b) tutorial\nper-image loop",
             "c": "(c) digitq predict\nend to end", "d": "(d) bare Keras\non the PNGs", "e": "(e) bare Keras\nscript"}
    keys = [k for k in "acdeb" if k in r]
    labels = [names[k] for k in keys]
    vals = [r[k]["images_per_second"] for k in keys]
    colours = {"a": "#4c72b0", "b": "#c44e52", "c": "#55a868", "d": "#8172b2", "e": "#937860"}
    fig, ax = plt.subplots(figsize=(8, 1.2 + 0.65 * len(keys)))
    bars = ax.barh(labels, vals, color=[colours[k] for k in keys])
    ax.set_xscale("log")
    for bar, k in zip(bars, keys):
        acc = r[k].get("accuracy")
        ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2,
                f"  {r[k]['images_per_second']:,.0f}/s" + (f", acc {acc * 100:.2f}%" if acc is not None else ""),
                va="center", fontsize=8)
    ax.set_xlim(right=max(vals) * 8)
    ax.invert_yaxis()
    ax.set_xlabel("images per second (log scale)")
    title(ax, f"Prediction throughput, {res['n']:,} MNIST test PNGs", ctx.quick)
    save(fig, path)


def summary_rows(res: dict) -> list[str]:
    g = res["goals"]
    keys = [k for k in ("c_over_a", "c_over_d", "c_over_e", "c_over_b") if k in g]
    names = {"c_over_a": "(c)/(a)", "c_over_d": "(c)/(d)", "c_over_e": "(c)/(e)", "c_over_b": "(c)/(b)"}
    value = ", ".join(f"{names[k]} **{g[k]['value']:.{1 if k == 'c_over_b' else 2}f}**" for k in keys)
    goal = ", ".join(f">= {g[k]['goal']:g} ({'met' if g[k]['met'] else 'NOT met'})" for k in keys)
    competitor = ("bare Keras on arrays / on the PNGs / as a script / per-image loop" if "c_over_d" in g
                  else "bare Keras / per-image loop")
    return [f"| prediction | {competitor} | {value} | {goal} |"]


SECTION = Section(
    name="predict",
    title="Prediction throughput",
    result=PredictResult,
    run=run,
    render=render,
    plot=plot,
    summary=summary_rows,
    repeats=lambda args: args.repeats,
)
