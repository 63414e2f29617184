"""The one owner of what a run folder holds: every file name, and how its JSON and log files are read and written.

A search run (`SearchRun`): config.json (the settings), checkpoint.pt (every epoch), log.jsonl (one line per epoch),
and once finished arch.json, probabilities.json, summary.json (with --rerank, first rerank/<i>/, one `TrainRun` per
network of the shortlist; a `--method naswot` search writes config.json, arch.json, summary.json and zero_cost.json
alone); `tvmnas pareto` adds pareto.json, `tvmnas report` the
report/ folder, `derive` derived/<target>-<goal>ms/, `specialize` specialized/<target>-<goal>ms/; `train --run` trains
into train/ (a `TrainRun`), `export --run` writes bundle-<target>/. Runs without --out go under runs/.
A training (`TrainRun`): settings.json, checkpoint.pt, log.jsonl, network.pt, summary.json.
Everything else asks these classes for a path instead of spelling a file name. Pure paths and file I/O: no torch.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

BUNDLE_PREFIX = "bundle-"
RUNS = Path("runs")  # where runs go when no --out is given


def default_search_folder(space: str, target: str, latency_ms: float) -> Path:
    return RUNS / f"{space}-{target}-{latency_ms:g}ms"


def default_train_folder(arch_file: Path) -> Path:
    """Where `train --arch FILE` trains when no --out is given."""
    return RUNS / f"train-{Path(arch_file).stem}"


@dataclass(frozen=True)
class _Run:
    """What every run folder holds: a checkpoint, a log of one line per epoch, a summary."""

    folder: Path

    @property
    def checkpoint(self) -> Path:
        return self.folder / "checkpoint.pt"

    @property
    def log(self) -> Path:
        return self.folder / "log.jsonl"

    @property
    def summary(self) -> Path:
        return self.folder / "summary.json"


@dataclass(frozen=True)
class TrainRun(_Run):
    @property
    def settings(self) -> Path:
        return self.folder / "settings.json"

    @property
    def network(self) -> Path:
        return self.folder / "network.pt"


@dataclass(frozen=True)
class SearchRun(_Run):
    @property
    def config(self) -> Path:
        return self.folder / "config.json"

    @property
    def arch(self) -> Path:
        return self.folder / "arch.json"

    @property
    def probabilities(self) -> Path:
        return self.folder / "probabilities.json"

    @property
    def zero_cost(self) -> Path:
        """A training-free search's networks, each with its score (`tvmnas.search.zero_cost`)."""
        return self.folder / "zero_cost.json"

    def rerank(self, index: int) -> TrainRun:
        """The training of the shortlist's network `index` (0 = the most probable)."""
        return TrainRun(self.folder / "rerank" / str(index))

    @property
    def pareto(self) -> Path:
        return self.folder / "pareto.json"

    @property
    def report(self) -> Path:
        return self.folder / "report"

    @property
    def train(self) -> TrainRun:
        return TrainRun(self.folder / "train")

    def derived(self, target_name: str, latency_ms: float) -> Path:
        """Where `tvmnas derive` writes a network for another goal (or target)."""
        return self.folder / "derived" / f"{target_name}-{latency_ms:g}ms"

    def specialized(self, target_name: str, latency_ms: float) -> Path:
        """Where `tvmnas specialize` writes its run folder."""
        return self.folder / "specialized" / f"{target_name}-{latency_ms:g}ms"

    def bundle(self, target_name: str) -> Path:
        return bundle_folder(self.folder, target_name)

    def bundles(self, manifest_name: str) -> list[Path]:
        """The bundle folders in the run that hold a manifest, sorted."""
        return sorted(p.parent for p in self.folder.glob(f"{BUNDLE_PREFIX}*/{manifest_name}"))


def bundle_folder(parent: Path, target_name: str) -> Path:
    """Where export puts the bundle for a target: beside the run's files, or beside a network file."""
    return parent / f"{BUNDLE_PREFIX}{target_name}"


def write_json(path: Path, data, indent: int = 1) -> None:
    path.write_text(json.dumps(data, indent=indent) + "\n")


def write_log(path: Path, entries: list[dict]) -> None:
    """The whole log, one JSON object per line."""
    path.write_text("".join(json.dumps(e) + "\n" for e in entries))


def append_log(path: Path, entry: dict) -> None:
    with path.open("a") as handle:
        handle.write(json.dumps(entry) + "\n")


def read_log(path: Path) -> list[dict]:
    """The log's entries (none when the file does not exist); blank lines are skipped."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
