"""The result of a run: latency percentiles, the JSON file and the plot of latency against offered load."""

from __future__ import annotations

import json
import math
from array import array
from pathlib import Path
from typing import Any

from bench.players.load import LevelResult
from bench.players.population import KINDS

PERCENTILES = (("p50", 50.0), ("p99", 99.0), ("p99_9", 99.9))


def percentile(ordered: list[float], share: float) -> float | None:
    """The nearest-rank percentile of sorted values (None when there are none)."""
    if not ordered:
        return None
    rank = max(1, math.ceil(share / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def latency_summary(latencies_ms: array) -> dict[str, float | None]:
    """p50, p99, p99.9, mean and max in ms."""
    ordered = sorted(latencies_ms)
    out: dict[str, float | None] = {name: _ms(percentile(ordered, share)) for name, share in PERCENTILES}
    out["mean"] = _ms(sum(ordered) / len(ordered)) if ordered else None
    out["max"] = _ms(ordered[-1]) if ordered else None
    return out


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def counts(result: LevelResult) -> dict[str, Any]:
    """What was sent and what came back, by kind of request."""
    return {
        "sent": result.sent,
        "answered": result.answered,
        "unanswered": result.unanswered,
        "errors": result.errors,
        "statuses": dict(sorted(result.statuses.items())),
        "by_kind": {
            kind: {
                "sent": result.sent_by_kind.get(kind, 0),
                "expected_answer": result.expected_by_kind.get(kind, 0),
                "unexpected_answer": result.unexpected_by_kind.get(kind, 0),
            }
            for kind in KINDS
        },
    }


def write_json(path: Path, result: dict[str, Any]) -> None:
    """The machine-readable result."""
    path.write_text(json.dumps(result, indent=2) + "\n")


def plot(path: Path, result: dict[str, Any]) -> None:
    """Latency (p50, p99, p99.9, log scale) against offered load, one point per open-loop level."""
    import matplotlib  # a dev dependency, only needed here

    matplotlib.use("Agg")
    from matplotlib import pyplot

    levels = [level for level in result["levels"] if level["mode"] == "open"]
    offered = [level["offered_rps"] for level in levels]
    figure, axes = pyplot.subplots(figsize=(6.4, 4.0), dpi=100)
    for name, label in (("p50", "p50"), ("p99", "p99"), ("p99_9", "p99.9")):
        axes.plot(offered, [level["latency_ms"][name] for level in levels], marker="o", label=label)
    for level in levels:
        others = level["cost"]["cpu_percent_of_one_core"]["everything_else"]
        axes.annotate(
            f"{round(100 * level['share_of_capacity'])}% (others {others:.0f}%)",
            (level["offered_rps"], level["latency_ms"]["p50"]),
            textcoords="offset points",
            xytext=(0, -14),
            ha="center",
            fontsize=8,
        )
    capacity = result["capacity"]["rps"]
    axes.axvline(capacity, color="grey", linestyle=":", linewidth=1)
    axes.set_yscale("log")
    axes.set_xlabel(
        "offered load, requests/s (open loop; dotted: capacity measured closed-loop)\n"
        "(others: CPU used by other processes during the level, % of one core)",
        fontsize=8,
    )
    axes.set_ylabel("latency from intended send, ms")
    machine = result["machine"]
    axes.set_title(
        f"bench/players, {result['population']['sessions']:,} sessions, {result['date'][:16]}Z\n"
        f"{machine['cores']} cores (shared, load {machine['load_average_before']}), gunicorn "
        f"{result['server']['worker_class']} x{result['server']['workers']}",
        fontsize=9,
    )
    axes.legend(fontsize=8)
    axes.grid(True, which="both", alpha=0.3)
    figure.tight_layout()
    figure.savefig(path)
    pyplot.close(figure)


if __name__ == "__main__":
    # python -m bench.players.report RESULT_FOLDER: draw latency.png again from its result.json.
    import sys

    folder = Path(sys.argv[1])
    plot(folder / "latency.png", json.loads((folder / "result.json").read_text()))
