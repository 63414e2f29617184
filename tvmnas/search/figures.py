"""The pictures of a search run, as PNG files: each layer's path probabilities over the epochs (the
ProxylessNAS figure), the expected and derived latency against the goal per epoch, and the Pareto front when
`tvmnas pareto` made one."""

from __future__ import annotations

import json
from pathlib import Path

from tvmnas.run_folder import SearchRun, read_log


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(plt, fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def probability_figure(log: list[dict], path: Path) -> Path:
    plt = _pyplot()
    layers = len(log[0]["probabilities"])
    cols = min(3, layers)
    rows = (layers + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 2.8 * rows), squeeze=False)
    epochs = [e["epoch"] + 1 for e in log]
    for i in range(layers):
        ax = axes[i // cols][i % cols]
        for op in log[0]["probabilities"][i]:
            ax.plot(epochs, [e["probabilities"][i][op] for e in log], marker="o", ms=3, label=op)
        ax.set_title(f"layer {i}", fontsize=9)
        ax.set_ylim(0, 1)
        ax.set_xlabel("epoch", fontsize=8)
        ax.set_ylabel("path probability", fontsize=8)
        ax.legend(fontsize=6, ncol=2)
    for j in range(layers, rows * cols):
        axes[j // cols][j % cols].axis("off")
    fig.suptitle("Path probabilities over the search", fontsize=10)
    return _save(plt, fig, path)


def latency_figure(log: list[dict], goal_ms: float, path: Path) -> Path:
    plt = _pyplot()
    epochs = [e["epoch"] + 1 for e in log]
    fig, ax = plt.subplots(figsize=(6, 3.6))
    ax.plot(epochs, [e["expected_latency_ms"] for e in log], marker="o", label="E[LAT] (probability-weighted)")
    ax.plot(epochs, [e["derived_latency_ms"] for e in log], marker="s", label="derived network")
    ax.axhline(goal_ms, color="k", linestyle="--", label=f"goal {goal_ms:g} ms")
    ax.set(xlabel="epoch", ylabel="predicted latency (ms)")
    ax.legend(fontsize=8)
    return _save(plt, fig, path)


def pareto_figure(pareto: dict, path: Path) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.8))
    points = pareto["points"]
    dominated = [p for p in points if p["dominated"]]
    front = [p for p in points if not p["dominated"]]
    ax.scatter([p["latency_ms"] for p in dominated], [p["valid_acc"] for p in dominated], c="0.6",
               label="dominated")
    ax.plot([p["latency_ms"] for p in front], [p["valid_acc"] for p in front], "o-", label="Pareto front")
    ax.set(xlabel="predicted latency (ms)", ylabel="validation accuracy (supernet weights)")
    ax.legend(fontsize=8)
    return _save(plt, fig, path)


def write_run_figures(run_dir: Path) -> list[Path]:
    """Write the run's figures into RUN_DIR/report/; returns their paths (none for a run without epochs)."""
    files = SearchRun(Path(run_dir))
    log = [e for e in read_log(files.log) if "probabilities" in e]
    out = files.report
    out.mkdir(exist_ok=True)
    paths = []
    if log:
        goal = json.loads(files.config.read_text())["latency_ms"]
        paths += [probability_figure(log, out / "probabilities.png"), latency_figure(log, goal, out / "latency.png")]
    if files.pareto.exists():
        paths.append(pareto_figure(json.loads(files.pareto.read_text()), out / "pareto.png"))
    return paths
