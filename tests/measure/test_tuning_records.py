"""The meta-schedule database: records are applied by structure whatever the block names, and a database that
meta-schedule cannot load is repaired without losing the records that load."""

import json

from tests.helpers import FAST
from tvmnas.arch import Arch
from tvmnas.measure.compile import fuse, import_torch
from tvmnas.measure.runner.local import LocalRunner
from tvmnas.measure.tuning_records import RECORDS, open_database
from tvmnas.model.blocks import fold_batchnorm
from tvmnas.model.network import Network
from tvmnas.profile import ProfileSettings, measure_candidate
from tvmnas.targets import load_target
from tvmnas.tvm_compat import apply_tuning_records


def scheduled_kernels(mod) -> int:
    import tvm

    return sum(1 for _, f in mod.functions_items()
               if isinstance(f, tvm.tirx.PrimFunc) and f.attrs and "tirx.is_scheduled" in f.attrs)


def test_records_of_a_block_schedule_the_network_and_a_broken_database_is_repaired(tiny_space, tmp_path):
    cpu = load_target("x86-cpu")
    tune_dir = tmp_path / "tuning"
    row = measure_candidate(tiny_space.layers()[0].candidate("mb_k3_e2"), cpu, LocalRunner(),
                            ProfileSettings(tune_trials=1, protocol=FAST), tune_dir)
    assert row.ok, row.error

    # The network's copies of the block's kernels carry other block names (numbered by position in the
    # network); the records tuned on the lone block (compiled as a block inside a network, in the target's
    # layout) still schedule them.
    net = Network(tiny_space, Arch("tiny", ("mb_k3_e2", "zero"))).eval()
    fused = fuse(import_torch(fold_batchnorm(net), (1, 1, 8, 8)), cpu.tvm(), cpu.layout)
    assert scheduled_kernels(apply_tuning_records(fused, open_database(tune_dir))) >= row.tasks_tuned

    # A record whose trace belongs to another kernel makes meta-schedule's loader fail; it is dropped on open.
    records = (tune_dir / RECORDS).read_text().splitlines()
    first, other = json.loads(records[0]), next(json.loads(r) for r in records if json.loads(r)[0] != 0)
    (tune_dir / RECORDS).write_text("\n".join(records + [json.dumps([first[0], other[1]])]) + "\n")
    db = open_database(tune_dir)
    assert len(db) == len(records)
    assert (tune_dir / RECORDS).read_text().splitlines() == records
    backups = list(tune_dir.glob(RECORDS + ".bak-*"))
    assert len(backups) == 1 and len(backups[0].read_text().splitlines()) == len(records) + 1


def test_a_budget_keeps_only_each_kernels_first_trials(tiny_space, tmp_path):
    from tvmnas.measure.tuning_records import WORKLOADS, budget_database

    cpu = load_target("x86-cpu")
    tune_dir = tmp_path / "tuning"
    cand = tiny_space.layers()[0].candidate("mb_k3_e2")
    for trials in (1, 3):  # the second budget adds records to the same kernels
        row = measure_candidate(cand, cpu, LocalRunner(), ProfileSettings(tune_trials=trials, protocol=FAST),
                                tune_dir)
        assert row.ok, row.error
    records = [json.loads(r) for r in (tune_dir / RECORDS).read_text().splitlines()]
    kernels = len((tune_dir / WORKLOADS).read_text().splitlines())
    per_kernel = {i: sum(1 for r in records if r[0] == i) for i in range(kernels)}
    assert max(per_kernel.values()) >= 2  # the larger budget did add records
    one = budget_database(tune_dir, 1)
    assert len(one) == sum(1 for n in per_kernel.values() if n)  # one record per tuned kernel
    first = {}
    for index, record in records:
        first.setdefault(index, record)
    # the record kept for each kernel is its first one: same measured run times
    kept = sorted(tuple(float(t) for t in r.run_secs) for r in one.get_all_tuning_records())
    want = sorted(tuple(float(t) for t in rec[1]) for rec in first.values())
    assert kept == want


def test_two_profiles_on_one_database_at_once_keep_every_row_once_and_the_records_loadable(tmp_path):
    """Two `profile` processes share a latency database and its tuning folder, started together on spaces whose
    kernels differ (so, unserialized, each would number its new workloads over the other's): both finish, every
    candidate's row is there once, and every tuning record replays on the workload it names, with no repair."""
    import subprocess
    import sys

    from tests.conftest import DATA
    from tvmnas.latency_db import LatencyDB
    from tvmnas.measure.tuning_records import WORKLOADS
    from tvmnas.space import load_space
    from tvmnas.tvm_compat import parse_record, parse_workload

    wide = json.loads((DATA / "tiny-space.json").read_text())
    wide["name"] = "tiny-wide"
    wide["stages"][0]["channels"] *= 2
    (tmp_path / "wide.json").write_text(json.dumps(wide))
    spaces = [DATA / "tiny-space.json", tmp_path / "wide.json"]
    db = tmp_path / "cache" / "lat.db"
    procs = [subprocess.Popen([sys.executable, "-m", "tvmnas.cli", "profile", "--space", str(space), "--target",
                               "x86-cpu", "--db", str(db), "--tune-trials", "1"], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for space in spaces]
    outputs = [proc.communicate(timeout=900)[0] for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], outputs
    with LatencyDB(db) as opened:
        rows = [(r.block_key, r.input_shape) for r in opened.rows() if r.level == "tuned-1"]
    wanted = {(c.key, c.shape_text) for space in spaces for c in load_space(str(space)).candidates()}
    assert sorted(rows) == sorted(wanted)  # each once: a candidate both spaces share is measured into one row
    (tune_dir,) = (db.parent / "tuning").iterdir()
    workloads = [parse_workload(line) for line in (tune_dir / WORKLOADS).read_text().splitlines() if line.strip()]
    records = [line for line in (tune_dir / RECORDS).read_text().splitlines() if line.strip()]
    assert records and all(parse_record(line, workloads.__getitem__) for line in records)
    assert not list(tune_dir.glob(RECORDS + ".bak-*"))


def test_cold_cache_tuning_times_each_trial_call_by_call(tiny_space, tmp_path):
    from tvmnas.measure.tuning import TuneSettings, make_in_process_runner, tune_fused
    from tvmnas.measure.tuning_records import tuning_store

    cpu = load_target("x86-cpu")
    net = Network(tiny_space, Arch("tiny", ("mb_k3_e2", "zero"))).eval()
    fused = fuse(import_torch(fold_batchnorm(net), (1, 1, 8, 8)), cpu.tvm())
    for cache in ("hot", "cold", "auto"):
        work = tmp_path / cache
        work.mkdir()
        with tuning_store(work).session() as store:
            report = tune_fused(fused, cpu, cpu.tvm(), store.database, work, TuneSettings(1),
                                lambda: make_in_process_runner("cpu", 1, cache), in_memory=True)
            timings = {len(r.run_secs) for r in store.database.get_all_tuning_records()}
        assert report.tasks_tuned > 0
        # cold: ten single calls, each after a cache flush; auto: this tiny network's kernels fit in L2, so hot
        assert timings == ({10} if cache == "cold" else {1})
