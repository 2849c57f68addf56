"""loss.png: training and validation loss against characters seen (needs the optional matplotlib)."""

from __future__ import annotations

import io
from pathlib import Path

from charnn.fileio import atomic_write


def matplotlib_available() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def plot_losses(metrics: list[dict], path: Path) -> None:
    """Draw train and val loss (nats/char) against chars seen and write the PNG atomically."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    train = [(m["chars"], m["loss"]) for m in metrics if "loss" in m]
    val = [(m["chars"], m["val_loss"]) for m in metrics if "val_loss" in m]
    fig = Figure(figsize=(7, 4), dpi=100)
    ax = fig.add_subplot()
    if train:
        ax.plot(*zip(*train, strict=True), label="train", color="tab:blue")
    if val:
        ax.plot(*zip(*val, strict=True), "o-", label="validation", color="tab:orange")
    ax.set_xlabel("characters seen")
    ax.set_ylabel("loss (nats per char)")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left")
    copied = [(m["chars"], 100 * m["copied_20"]) for m in metrics if "copied_20" in m]
    if copied:  # a seeded sample's share in copied spans of 20+ chars (training/copy_probe.py)
        right = ax.twinx()
        right.plot(*zip(*copied, strict=True), "s--", color="tab:red", label="sample copied (20+ spans)")
        right.set_ylabel("% of a sample in copied 20+ char spans")
        right.set_ylim(0, 100)
        right.legend(loc="upper right")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    atomic_write(path, buf.getvalue())
