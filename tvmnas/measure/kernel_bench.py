"""Kernel choices per device: the latency of every layer candidate by stage, default vs tuned schedules."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from tvmnas.latency_db import LatencyRow
from tvmnas.space import SearchSpace
from tvmnas.targets import TargetSpec


@dataclass(frozen=True)
class KernelEntry:
    stage: str
    op: str
    kernel: int
    expand: int
    default_ms: float | None
    tuned_ms: float | None

    @property
    def speedup(self) -> float | None:
        if self.default_ms is None or self.tuned_ms is None:
            return None
        return self.default_ms / self.tuned_ms


def kernel_table(space: SearchSpace, rows_by_level: dict[str, dict[tuple[str, str], LatencyRow]],
                 default_level: str, tuned_level: str) -> list[KernelEntry]:
    """One entry per unique (stage, block op); rows_by_level maps level -> (block_key, shape) -> row."""
    entries, seen = [], set()
    for layer in space.layers():
        for op in space.block_ops:
            cand = layer.candidate(op)
            if (cand.key, cand.shape_text) in seen:
                continue
            seen.add((cand.key, cand.shape_text))

            def latency(level: str) -> float | None:
                row = rows_by_level.get(level, {}).get((cand.key, cand.shape_text))
                return row.latency_ms if row is not None and row.ok else None

            kernel, expand = (int(p[1:]) for p in op.split("_")[1:])
            entries.append(KernelEntry(cand.stage_label, op, kernel, expand,
                                       latency(default_level), latency(tuned_level)))
    return entries


def bench_meta(space: SearchSpace, spec: TargetSpec, rows_by_level: dict[str, dict], levels: list[str],
               command: str) -> dict:
    """What the results record beside the table: target, levels, cost per candidate, versions, command."""
    from tvmnas.versions import tvm_version

    cost = {level: {f"mean_{k}": round(sum(getattr(r, k) for r in rows.values()) / len(rows), 2)
                    for k in ("compile_s", "tune_s")} for level, rows in rows_by_level.items()}
    return {"target": spec.name, "tvm_target": spec.resolved(), "space": space.name, "tvm_version": tvm_version(),
            "default_level": levels[0], "tuned_level": levels[1], "seconds_per_candidate_when_measured": cost,
            "command": command}


def _fmt(value: float | None, digits: int = 4) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def markdown_table(entries: list[KernelEntry], title: str) -> str:
    lines = [f"## {title}", "", "| stage (in -> out, stride) | op | default ms | tuned ms | tuned speed-up |",
             "|---|---|---:|---:|---:|"]
    for e in entries:
        lines.append(f"| {e.stage} | {e.op} | {_fmt(e.default_ms)} | {_fmt(e.tuned_ms)} | "
                     f"{_fmt(e.speedup, 1)}{'' if e.speedup is None else 'x'} |")
    return "\n".join(lines) + "\n"


def write_results(entries: list[KernelEntry], meta: dict, out_prefix: Path) -> list[Path]:
    """Write <prefix>.json, <prefix>.md and <prefix>.png; returns the paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_prefix = Path(out_prefix)
    out_prefix.parent.mkdir(parents=True, exist_ok=True)
    paths = [out_prefix.with_suffix(s) for s in (".json", ".md", ".png")]
    paths[0].write_text(json.dumps({"meta": meta, "entries": [asdict(e) for e in entries]}, indent=1) + "\n")
    notes = "\n".join(f"- {k}: {v}" for k, v in meta.items())
    paths[1].write_text(markdown_table(entries, f"Kernel choices on {meta.get('target', '?')}") + "\n" + notes + "\n")

    stages = list(dict.fromkeys(e.stage for e in entries))
    fig, axes = plt.subplots(1, len(stages), figsize=(3.2 * len(stages), 3.8), squeeze=False)
    for ax, stage in zip(axes[0], stages):
        group = [e for e in entries if e.stage == stage]
        xs = range(len(group))
        ax.bar([x - 0.2 for x in xs], [e.default_ms or 0 for e in group], 0.4, label="default")
        ax.bar([x + 0.2 for x in xs], [e.tuned_ms or 0 for e in group], 0.4, label="tuned")
        ax.set_xticks(list(xs), [e.op.removeprefix("mb_") for e in group], rotation=60, fontsize=8)
        ax.set_title(stage, fontsize=9)
        ax.set_ylabel("latency (ms)")
    axes[0][0].legend(fontsize=8)
    fig.suptitle(f"{meta.get('target', '?')}: latency per candidate and stage", fontsize=10)
    fig.tight_layout()
    fig.savefig(paths[2], dpi=110)
    plt.close(fig)
    return paths
