"""p99 latency against offered rate, both systems (needs matplotlib: the `bench` extra)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def plot(results: dict[str, Any], path: Path) -> str | None:
    """Write the PNG; return None, or why it was skipped."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib not installed (pip install -e '.[bench]'); plot skipped"
    panels = [("fanout", "1:1 fan-out (1 connection per user)"), ("group", "group fan-out")]
    fig, axes = plt.subplots(1, len(panels), figsize=(12, 4.5))
    for ax, (key, title) in zip(axes, panels, strict=True):
        for system, data in results.get(key, {}).items():
            for ladder in data.get("ladders", []):
                rates = [s["rate"] for s in ladder["steps"]]
                p99 = [max(s["p99_ms"], 0.01) for s in ladder["steps"]]
                ax.plot(rates, p99, marker="o", label=f"{system} ({ladder['mode']})")
        limit = results.get("options", {}).get("p99_limit_ms", 50)
        ax.axhline(limit, color="grey", linestyle="--", linewidth=1, label=f"{limit} ms")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("offered rate (events/s published)")
        ax.set_ylabel("p99 end-to-end latency (ms)")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None
