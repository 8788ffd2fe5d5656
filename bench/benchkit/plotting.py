"""What every plot shares: matplotlib without a display, the smoke-run mark, the file."""

from __future__ import annotations

from pathlib import Path

SMOKE_MARK = "\nSMOKE RUN (--quick): small data, not real figures"


def have_matplotlib() -> bool:
    """Whether matplotlib imports; it is set to draw into files only."""
    try:
        import matplotlib
    except ImportError:
        return False
    matplotlib.use("Agg")
    return True


def title(ax_or_fig, text: str, quick: bool) -> None:
    """A figure's (suptitle) or an axes' title, marked when the result is from a --quick run."""
    if quick:
        text += SMOKE_MARK
    ax_or_fig.suptitle(text, fontsize=11) if hasattr(ax_or_fig, "suptitle") else ax_or_fig.set_title(text, fontsize=11)


def save(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
