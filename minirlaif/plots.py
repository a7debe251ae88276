"""Training curves from a metrics.jsonl to a PNG (matplotlib, imported only when asked for)."""

from __future__ import annotations

from pathlib import Path

from minirlaif.jsonl import read_jsonl

DEFAULT_KEYS = ("score", "reward", "kl", "beta", "entropy", "policy_loss", "value_loss", "clip_frac",
                "approx_kl", "explained_variance", "response_length", "tokens_per_s")


def plot_metrics(metrics_path: str | Path, png_path: str | Path, keys: tuple[str, ...] = DEFAULT_KEYS,
                 x_key: str = "iteration") -> Path:
    """One small panel per logged key that exists in the file, against `x_key`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [row for _, row in read_jsonl(metrics_path, skip=lambda *_: None)]
    keys = tuple(k for k in keys if any(k in r for r in rows))
    cols = 4
    fig, axes = plt.subplots((len(keys) + cols - 1) // cols, cols, figsize=(4 * cols, 2.6 * ((len(keys) + cols - 1) // cols)),
                             squeeze=False)
    for ax, key in zip(axes.flat, keys):
        pts = [(r.get(x_key, i), r[key]) for i, r in enumerate(rows) if key in r]
        ax.plot([p[0] for p in pts], [p[1] for p in pts])
        ax.set_title(key, fontsize=9)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(png_path, dpi=110)
    plt.close(fig)
    return Path(png_path)
