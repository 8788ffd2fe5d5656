"""CPU kernels: the worker's oneDNN default (digitq.worker.devices.prefer_onednn) against TensorFlow's own
choice on this CPU, with the bare helper."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from benchkit.harness import Harness
from benchkit.plotting import save, title
from benchkit.section import Context, Result, Section
from benchkit.stamps import cpu_label
from benchkit.stats import div, median
from benchkit.text import fr, pct


@dataclass
class OnednnResult(Result):
    train_images: int
    test_images: int
    cpu: str
    tf_default: bool | None
    """Whether TensorFlow turns oneDNN on by itself on this CPU (None: not known)."""
    sides: dict
    """{"0": oneDNN off, "1": on}: images/s training and evaluation, accuracy, the runs."""
    train_speedup: float | None
    eval_speedup: float | None


def run(h: Harness) -> OnednnResult:
    """The bare helper with TF_ENABLE_ONEDNN_OPTS=0 and =1, alternating which goes first."""
    a = h.args
    args = ["--epochs", "1", "--train-size", str(a.scale_images), "--validation-size", "0", "--steady"]
    runs = {"0": [], "1": []}
    for i in range(a.repeats):
        for v in (("0", "1") if i % 2 == 0 else ("1", "0")):
            r = h.bare_train(args, {"TF_ENABLE_ONEDNN_OPTS": v})
            if r.get("onednn") is not None and r["onednn"] != (v == "1"):
                raise RuntimeError(f"TF_ENABLE_ONEDNN_OPTS={v} but TensorFlow reports oneDNN {r['onednn']}")
            runs[v].append(r)
            h.log(f"oneDNN {'on' if v == '1' else 'off'}: {r['steady_images_per_second'] or 0:,.0f} images/s "
                  f"training (steady), test evaluation {r['phases_seconds']['eval']:.2f} s, "
                  f"accuracy {r['test_accuracy']:.4f}")
    sides = {}
    for v, rs in runs.items():
        sides[v] = {"steady_images_per_second": median(r["steady_images_per_second"] for r in rs),
                    "epoch_images_per_second": median(r["history"][0]["images_per_second"] for r in rs),
                    "eval_seconds": median(r["phases_seconds"]["eval"] for r in rs),
                    "eval_images_per_second": median(r["test_images"] / r["phases_seconds"]["eval"] for r in rs),
                    "test_accuracy": median(r["test_accuracy"] for r in rs),
                    "other_share": median((r.get("cpu") or {}).get("other_share") for r in rs),
                    "runs": [{"steady_images_per_second": r["steady_images_per_second"],
                              "epoch_images_per_second": r["history"][0]["images_per_second"],
                              "eval_seconds": r["phases_seconds"]["eval"], "test_accuracy": r["test_accuracy"],
                              "onednn": r.get("onednn"), "cpu": r.get("cpu")} for r in rs]}
    off, on = sides["0"], sides["1"]
    return OnednnResult(train_images=a.scale_images, test_images=runs["1"][0]["test_images"],
                        cpu=cpu_label(h.machine), tf_default=h.machine.get("tf_default_onednn"), sides=sides,
                        train_speedup=div(on["steady_images_per_second"], off["steady_images_per_second"]),
                        eval_speedup=div(on["eval_images_per_second"], off["eval_images_per_second"]))

# --- outputs --------------------------------------------------------------------------------
rendered_seconds: float | None = None  # set by --render-only: the recorded run's length


def render(res: dict, ctx: Context) -> list[str]:
    tf_default = {True: "on", False: "off"}.get(res["tf_default"], "not known")
    L = ["TensorFlow turns its oneDNN CPU kernels on by itself only on CPUs with AVX-512 VNNI/BF16 or AMX.",
         "digitq's worker turns them on for every x86-64 CPU (`TF_ENABLE_ONEDNN_OPTS=1` unless it is set; see",
         "`digitq.worker.devices.prefer_onednn`). The competitor is TensorFlow's own choice, which on this CPU "
         f"({res['cpu']}) is **{tf_default}**.", "",
         f"`bench/bare_keras.py --epochs 1 --train-size {res['train_images']} --validation-size 0 --steady` in a "
         "fresh process with `TF_ENABLE_ONEDNN_OPTS=0` and `=1`, alternating which goes first: 1 epoch of the",
         f"default cnn on {res['train_images']:,} images, then `model.evaluate` on the {res['test_images']:,} test "
         "images. Steady = the first epoch's batches after a short warm-up.", "",
         "| oneDNN | images/s training (steady) | images/s whole epoch | test evaluation (s) | images/s evaluation | "
         "test accuracy | other processes' CPU share (median) |",
         "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for v, label in (("0", "off"), ("1", "on")):
        x = res["sides"][v]
        L.append(f"| {label} | {x['steady_images_per_second'] or 0:,.0f} | {x['epoch_images_per_second'] or 0:,.0f} | "
                 f"{x['eval_seconds']:.2f} | {x['eval_images_per_second']:,.0f} | {x['test_accuracy'] * 100:.2f}% | "
                 f"{pct(x.get('other_share'))} |")
    L += [f"| **on / off** | **{fr(res['train_speedup'])}** | | | **{fr(res['eval_speedup'])}** | | |", "",
          "Per run (training images/s, steady): "
          + "; ".join(f"{'on' if v == '1' else 'off'} "
                      + ", ".join(f"{r['steady_images_per_second'] or 0:,.0f}" for r in res["sides"][v]["runs"])
                      for v in ("0", "1")) + ".", ""]
    return L



def plot(res: dict, path: Path, ctx: Context) -> None:
    import matplotlib.pyplot as plt

    off, on = res["sides"]["0"], res["sides"]["1"]
    fig, ax = plt.subplots(figsize=(8, 3.4))
    groups = [("training (steady)", "steady_images_per_second"), ("test evaluation", "eval_images_per_second")]
    for j, (label, color, side) in enumerate((("oneDNN off", "#c44e52", off), ("oneDNN on", "#55a868", on))):
        vals = [side[key] or 0 for _, key in groups]
        bars = ax.barh([i + j * 0.38 for i in range(len(groups))], vals, height=0.36, color=color, label=label)
        for bar, v in zip(bars, vals):
            ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, f"  {v:,.0f}/s", va="center", fontsize=8)
    ax.set_yticks([i + 0.19 for i in range(len(groups))], [g for g, _ in groups])
    ax.set_xlim(0, max(side[key] or 0 for side in (off, on) for _, key in groups) * 1.18)
    ax.set_xlabel("images per second")
    ax.grid(alpha=0.3, axis="x")
    ax.legend(fontsize=8, loc="lower right")
    title(ax, f"TensorFlow's oneDNN kernels on {res['cpu']}: training {fr(res['train_speedup'])}", ctx.quick)
    save(fig, path)


def summary_rows(res: dict) -> list[str]:
    k = res
    return [f"| CPU kernels on {k['cpu']} | TensorFlow's own choice "
            f"(oneDNN {'on' if k['tf_default'] else 'off' if k['tf_default'] is False else 'unknown'}) | "
            f"oneDNN on: training **{fr(k['train_speedup'])}** images/s, test evaluation "
            f"**{fr(k['eval_speedup'])}** | - |"]


SECTION = Section(
    name="onednn",
    title="CPU kernels: TensorFlow's oneDNN on or off",
    result=OnednnResult,
    run=run,
    render=render,
    plot=plot,
    summary=summary_rows,
    repeats=lambda args: args.repeats,
)
