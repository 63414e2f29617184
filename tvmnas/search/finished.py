"""A search run after the fact: its settings and supernet (weights and architecture parameters), and the files a
derivation writes, so a network can be derived for a new goal or target without searching again."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tvmnas.arch import Arch, save_arch
from tvmnas.errors import TvmnasError
from tvmnas.registry import read_json_object
from tvmnas.run_folder import SearchRun, write_json
from tvmnas.search.config import SearchConfig
from tvmnas.search.derive import Derived
from tvmnas.search.run import SearchState, load_checkpoint, make_state
from tvmnas.space import SearchSpace, load_space


@dataclass
class FinishedRun:
    run_dir: Path
    cfg: SearchConfig
    space: SearchSpace
    state: SearchState  # the supernet as the last checkpoint left it


def load_run(run_dir: Path) -> FinishedRun:
    """A run's settings and its supernet from its last checkpoint (one line when either is missing)."""
    run_dir = Path(run_dir)
    files = SearchRun(run_dir)
    if not files.config.exists():
        raise TvmnasError(f"{run_dir} is not a search run (no {files.config.name})")
    cfg = SearchConfig.from_json(read_json_object(files.config, "search config"), str(files.config))
    if cfg.method != "proxyless":
        raise TvmnasError(f"{run_dir} is a {cfg.method} search: it trained no supernet to derive or score with")
    if not files.checkpoint.exists():
        raise TvmnasError(f"{run_dir} has no checkpoint: the search did not finish an epoch")
    space = load_space(cfg.space)
    state = make_state(space, cfg, n_train=1)  # the learning-rate schedule's own state comes from the checkpoint
    load_checkpoint(files.checkpoint, state, cfg)
    return FinishedRun(run_dir, cfg, space, state)


def derivation_summary(arch: Arch, derived: Derived, goal_ms: float, target: str, how: str, **extra) -> dict:
    """What a derivation's summary.json says: the goal, the derived predicted latency and the share of the goal
    it uses."""
    return {"arch": list(arch.ops), "target": target, "derivation": how, "latency_goal_ms": goal_ms,
            "predicted_latency_ms": derived.latency_ms, "goal_share": derived.latency_ms / goal_ms,
            "log_probability": derived.log_probability, **extra}


def write_derivation(out_dir: Path, arch: Arch, summary: dict) -> Path:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = SearchRun(out_dir)
    save_arch(arch, files.arch)
    write_json(files.summary, summary)
    return out_dir
