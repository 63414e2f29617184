"""The chain a user runs, as one: `profile --tune-trials 2` on the tiny space, then `search`, `train` and `export`
with the same database. The export compiles with the records the profile tuned (it tunes nothing new), its
manifest names that level, and its prediction is the sum of the database rows the network is made of (scaled by
the space's reference network, which the profile timed whole beside its blocks). Nothing on
the way prints a warning: neither Python's nor a library's own (xgboost's cost model logs to the C stderr)."""

import json
import re

import pytest

from tvmnas.cli import main
from tvmnas.latency_db import LatencyDB
from tvmnas.measure.method import latency_scope
from tvmnas.reference_network import read_network_anchor
from tvmnas.search.latency import table_from_db
from tvmnas.space import load_space
from tvmnas.targets import load_target
from tvmnas.versions import tvm_version

from tests.conftest import DATA


def test_profile_search_train_export_share_one_database(tmp_path, tiny_idx_dir, capfd, recwarn):
    space_file, db, run = DATA / "tiny-space.json", tmp_path / "lat.db", tmp_path / "run"
    assert main(["profile", "--space", str(space_file), "--target", "x86-cpu", "--db", str(db),
                 "--tune-trials", "2"]) == 0
    with LatencyDB(db) as opened:
        rows = {(r.block_key, r.input_shape): r for r in opened.rows() if r.ok and r.level == "tuned-2"}
    space = load_space(str(space_file))
    assert len(rows) == len(space.candidates())
    with LatencyDB(db) as opened:
        table = table_from_db(space, opened, latency_scope(load_target("x86-cpu"), "local", "tuned-2"))
    goal_ms = (table.min_ms + table.max_ms) / 2
    assert main(["search", "--space", str(space_file), "--target", "x86-cpu", "--db", str(db), "--tune-trials", "2",
                 "--latency-ms", f"{goal_ms:.6f}", "--data", str(tiny_idx_dir), "--batch-size", "16", "--epochs", "2",
                 "--out", str(run)]) == 0
    assert main(["train", "--run", str(run), "--epochs", "1", "--batch-size", "16"]) == 0
    assert main(["export", "--run", str(run), "--target", "x86-cpu", "--db", str(db), "--tune-trials", "2"]) == 0
    out, err = capfd.readouterr()
    warned = [f"{w.category.__name__}: {w.message} ({w.filename}:{w.lineno})" for w in recwarn]
    assert warned == [], "\n".join(warned)
    assert not re.search(r"\w+Warning: |\bWARNING\b", out + err), [line for line in (out + err).splitlines()
                                                                   if "arning" in line or "WARNING" in line]

    manifest = json.loads((run / "bundle-x86-cpu" / "manifest.json").read_text())
    assert manifest["level"] == "tuned-2" and manifest["tvm_version"] == tvm_version()
    # every kernel was tuned by the profile already, but for the network's layout transforms into and out of the
    # blocked region (x86-cpu compiles in NCHW8c; no block has them: see `without_boundary_transforms`)
    assert manifest["seconds"]["kernels_tuned"] <= 2
    ops = json.loads((run / "arch.json").read_text())["ops"]
    blocks = space.fixed_candidates() + [layer.candidate(op) for layer, op in zip(space.layers(), ops)
                                         if op != "zero"]
    # the prediction: the blocks' rows, scaled by how the space's reference network (timed whole by the profile)
    # compares with the sum of its own blocks' rows
    with LatencyDB(db) as opened:
        anchor = read_network_anchor(opened, latency_scope(load_target("x86-cpu"), "local", "tuned-2"), space)
    scale = anchor / sum(rows[(c.key, c.shape_text)].latency_ms for c in space.blocks(space.mobilenetv2_ops))
    composition = manifest["latency"]["predicted_composition"]
    assert composition["networks"] == 1 and composition["scale"] == pytest.approx(scale, rel=1e-12)
    assert manifest["latency"]["predicted_ms"] == pytest.approx(
        scale * sum(rows[(c.key, c.shape_text)].latency_ms for c in blocks), rel=1e-12)
    assert all(r.target_fp == load_target("x86-cpu").fingerprint("local") for r in rows.values())

    # the winner tuned deeper at export: the manifest keeps the table's prediction (tuned-2, what the search used)
    # beside the module's level and measurement, and does not judge their difference as noise
    deeper = tmp_path / "deeper"
    assert main(["export", "--run", str(run), "--target", "x86-cpu", "--db", str(db), "--tune-trials", "3",
                 "--out", str(deeper)]) == 0
    manifest = json.loads((deeper / "manifest.json").read_text())
    latency = manifest["latency"]
    assert manifest["level"] == "tuned-3" and latency["predicted_level"] == "tuned-2"
    assert latency["predicted_ms"] == pytest.approx(scale * sum(rows[(c.key, c.shape_text)].latency_ms
                                                                for c in blocks))
    assert latency["agreement"]["within_band"] is None and manifest["seconds"]["kernels_tuned"] >= 1
