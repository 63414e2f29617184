"""Where a target's meta-schedule tuning records live and how they are read: the JSON database (workloads and
records, appended to by every tuning session), its repair, the per-budget views that give a kernel the records of
its first N trials, the log of the budgets each kernel was tuned with, and the log of trial builds that ran past
their time. Tuning itself is `tvmnas.measure.tuning`.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import time
from contextlib import contextmanager
from pathlib import Path

from tvmnas.targets import TargetSpec
from tvmnas.tvm_compat import normalize_kernel, parse_record, parse_workload

WORKLOADS, RECORDS = "database_workload.json", "database_tuning_record.json"
LOCK = "tuning.lock"  # held by the process that tunes or reads the folder (see `TuningStore.session`)


def tuning_dir(db_path: Path, spec: TargetSpec, device_label: str) -> Path:
    """The meta-schedule database of one target (and measuring device), kept beside the latency database."""
    return Path(db_path).resolve().parent / "tuning" / f"{spec.name}-{spec.fingerprint(device_label)}"


def open_database(work_dir: Path):
    """The per-target meta-schedule JSON database (created when missing; records are appended). A database that
    meta-schedule cannot load is repaired first (see `repair_database`)."""
    from tvm.s_tir import meta_schedule as ms

    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    load = lambda: ms.database.JSONDatabase(path_workload=str(work_dir / WORKLOADS),
                                            path_tuning_record=str(work_dir / RECORDS))
    try:
        return load()
    except Exception:  # noqa: BLE001 - a record that does not replay on its workload stops the whole load
        repair_database(work_dir)
        return load()


def repair_database(work_dir: Path) -> int:
    """Drop the tuning records that do not load (a trace that does not replay on its workload's kernel, as
    tuning a structurally equal kernel with other block names used to write). The original records file is kept
    as `database_tuning_record.json.bak-<unix time>`. Returns the number of records dropped."""
    work_dir = Path(work_dir)
    workloads = [parse_workload(line) for line in (work_dir / WORKLOADS).read_text().splitlines() if line.strip()]
    lines = [line for line in (work_dir / RECORDS).read_text().splitlines() if line.strip()]
    kept = []
    for line in lines:
        try:
            parse_record(line, workloads.__getitem__)
        except Exception:  # noqa: BLE001 - any record that does not load is dropped
            continue
        kept.append(line)
    shutil.copyfile(work_dir / RECORDS, work_dir / f"{RECORDS}.bak-{int(time.time())}")
    tmp = work_dir / (RECORDS + ".tmp")
    tmp.write_text("".join(line + "\n" for line in kept))
    os.replace(tmp, work_dir / RECORDS)
    return len(lines) - len(kept)


class TuningStore:
    """One target's meta-schedule records, read once per process: the JSON database, and per trial budget N an
    in-memory database holding, for each kernel, the records of its first N tuning trials (in the order they were
    committed). Compiling at level tuned-N with the latter gives every kernel what N trials found, even after a
    larger budget added records, so a tuned-N latency stays what a tuned-N module measures. Records are only ever
    appended, so a budget database is kept up to date by reading the lines added since it was last read.

    Several processes may tune into one folder (two `profile`s on one database): each works inside `session()`,
    which holds the folder's lock and rereads what another process wrote since. Meta-schedule's JSON database
    numbers a new workload by the workloads it has loaded, so a stale one would file records under another
    process's workload."""

    def __init__(self, work_dir: Path) -> None:
        self.work_dir = Path(work_dir)
        self._database = None
        self._budgets: dict[int, _Budget] = {}
        self._sizes_left: tuple[int, int] | None = None  # the files' sizes when this process last let go

    def _sizes(self) -> tuple[int, int]:
        return tuple((self.work_dir / name).stat().st_size if (self.work_dir / name).exists() else 0
                     for name in (WORKLOADS, RECORDS))

    @contextmanager
    def session(self):
        """Hold the folder (an exclusive lock, waited for) while tuning into it and reading it."""
        self.work_dir.mkdir(parents=True, exist_ok=True)
        with open(self.work_dir / LOCK, "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                sizes = self._sizes()
                if self._sizes_left is not None and sizes != self._sizes_left:
                    self._database = None  # another process added workloads or records: load them
                    if sizes[1] < self._sizes_left[1]:  # and rewrote the records (a repair): read them anew
                        self._budgets.clear()
                yield self
            finally:
                self._sizes_left = self._sizes()
                fcntl.flock(handle, fcntl.LOCK_UN)

    @property
    def database(self):
        """The JSON database (opened, and repaired when needed, on first use)."""
        if self._database is None:
            self._database = open_database(self.work_dir)
        return self._database

    def budget(self, trials: int):
        self.database  # noqa: B018 - opening repairs a database whose records do not all load
        budget = self._budgets.setdefault(trials, _Budget(trials))
        budget.read(self.work_dir)
        return budget.memory


class _Budget:
    def __init__(self, trials: int) -> None:
        from tvm.s_tir import meta_schedule as ms

        self.trials = trials
        self.memory = ms.database.MemoryDatabase()
        self.lines_read = 0
        self.workloads: dict[int, object] = {}  # workload index -> committed workload
        self.taken: dict[int, int] = {}

    def read(self, work_dir: Path) -> None:
        if not (work_dir / RECORDS).exists():
            return
        lines = (work_dir / RECORDS).read_text().splitlines()
        workload_lines: list[str] = []

        def workload_of(index: int):
            if index not in self.workloads:
                if not workload_lines:
                    workload_lines.extend(w for w in (work_dir / WORKLOADS).read_text().splitlines() if w.strip())
                self.workloads[index] = self.memory.commit_workload(parse_workload(workload_lines[index]).mod)
            return self.workloads[index]

        for line in lines[self.lines_read:]:
            if not line.strip() or self.taken.get(json.loads(line)[0], 0) >= self.trials:
                continue
            index, record = parse_record(line, workload_of)
            self.memory.commit_tuning_record(record)
            self.taken[index] = self.taken.get(index, 0) + 1
        self.lines_read = len(lines)


_STORES: dict[Path, TuningStore] = {}


def tuning_store(work_dir: Path) -> TuningStore:
    """The process's store of one tuning directory (opened once: reading a database takes seconds)."""
    key = Path(work_dir).resolve()
    if key not in _STORES:
        _STORES[key] = TuningStore(key)
    return _STORES[key]


def budget_database(work_dir: Path, trials: int):
    """What `trials` trials found for each kernel of the tuning directory (see `TuningStore`)."""
    with tuning_store(work_dir).session() as store:
        return store.budget(trials)


def canonical_kernel(database, kernel):
    """The database's own copy of a kernel (same structure, maybe other block names), so that a trace tuned or
    applied on it names the blocks the database knows. A new kernel is added as it is."""
    return database.commit_workload(normalize_kernel(kernel)).mod


TUNED = "tuned_budgets.jsonl"  # one line per tuning session: [kernel's structural hash, trials it was tuned with]


def kernel_hash(database, kernel) -> str:
    import tvm_ffi

    return str(tvm_ffi.structural_hash(database.commit_workload(normalize_kernel(kernel)).mod))


def tuned_budgets(work_dir: Path) -> dict[str, int]:
    """Per kernel, the largest trial budget it has been tuned with (a kernel whose schedule space holds fewer
    distinct candidates, or whose trials failed, keeps fewer valid records than its budget: it is not tuned again)."""
    budgets: dict[str, int] = {}
    path = Path(work_dir) / TUNED
    for line in path.read_text().splitlines() if path.exists() else []:
        try:
            key, trials = json.loads(line)
        except ValueError:  # a line cut short by a kill
            continue
        budgets[key] = max(budgets.get(key, 0), int(trials))
    return budgets


def record_budgets(work_dir: Path, kernel_hashes: list[str], trials: int) -> None:
    """Log that these kernels were tuned with `trials` trials (appended once a session is done: a kill re-tunes)."""
    with (Path(work_dir) / TUNED).open("a") as handle:
        handle.write("".join(json.dumps([key, trials]) + "\n" for key in kernel_hashes))


BUILD_TIMEOUTS = "build_timeouts.jsonl"  # one line per trial build that ran past its time: [seed, seconds]


def build_timeouts(work_dir: Path) -> int:
    """How many tuning sessions of this folder ended on a trial build that ran past its time (each later session
    samples its trials with another seed, so that it does not build the same schedule again)."""
    path = Path(work_dir) / BUILD_TIMEOUTS
    return len(path.read_text().splitlines()) if path.exists() else 0


def record_build_timeout(work_dir: Path, seed: int, seconds: float) -> None:
    with (Path(work_dir) / BUILD_TIMEOUTS).open("a") as handle:
        handle.write(json.dumps([seed, round(seconds, 1)]) + "\n")
