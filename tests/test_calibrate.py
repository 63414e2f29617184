"""Calibrating how blocks add up inside whole networks: the fit, its storage, and its use by every prediction."""

import numpy as np
import pytest

from tests.helpers import fill_db
from tvmnas.calibrate import calibrate, calibration_archs, fit_composition
from tvmnas.errors import TvmnasError
from tvmnas.latency_db import Composition, LatencyDB
from tvmnas.measure.method import latency_scope
from tvmnas.measure.protocol import Estimate, Interleaved
from tvmnas.measure.runner.local import LocalRunner
from tvmnas.measure.tuning_records import tuning_dir
from tvmnas.search.latency import predict, table_from_db
from tvmnas.targets import load_target

MS = {"stem": 0.05, "first": 0.1, "head": 0.2, "mb_k3_e1": 0.3, "mb_k3_e2": 0.5}


def test_fit_recovers_a_composition_and_keeps_its_terms_nonnegative():
    rng = np.random.default_rng(1)
    blocks, weights = rng.uniform(5, 7, 12), rng.uniform(6, 12, 12)
    exact = fit_composition(list(blocks), list(weights), list(0.4 + 0.9 * blocks + 0.15 * weights))
    assert (exact.intercept_ms, exact.scale, exact.ms_per_weight_mb) == pytest.approx((0.4, 0.9, 0.15), abs=1e-9)
    assert exact.networks == 12 and exact.loo_mean_abs_error < 1e-9
    # weights that would have to make a network faster get no term; the scale takes what is left
    shrunk = fit_composition(list(blocks), list(weights), list(1.2 * blocks - 0.1 * weights))
    assert shrunk.ms_per_weight_mb == 0 and shrunk.intercept_ms >= 0 and shrunk.scale > 0
    assert shrunk.loo_mean_abs_error > 0.005  # what the missing term costs shows in the left-out error
    with pytest.raises(TvmnasError, match="at least 5"):
        fit_composition([1.0] * 4, [1.0] * 4, [1.0] * 4)


def test_calibration_networks_span_the_table_and_follow_the_seed(tiny_space):
    def op_ms(layer, op):
        return 0.0 if op == "zero" else MS[op]

    archs = calibration_archs(tiny_space, op_ms, 5, np.random.default_rng(3))
    assert len(set(archs)) == 5
    assert archs[0] == tuple(min(layer.choices, key=lambda op: op_ms(layer, op)) for layer in tiny_space.layers())
    assert archs[1] == tuple(max(layer.choices, key=lambda op: op_ms(layer, op)) for layer in tiny_space.layers())
    assert archs == calibration_archs(tiny_space, op_ms, 5, np.random.default_rng(3))
    # a space with fewer distinct networks than asked for gives them all, once each
    assert len(set(calibration_archs(tiny_space, op_ms, 50, np.random.default_rng(3)))) == len(
        calibration_archs(tiny_space, op_ms, 50, np.random.default_rng(3)))


def test_a_stored_composition_enters_the_table_and_the_prediction_alike(tiny_space, tmp_path):
    db_path, cpu = tmp_path / "lat.db", load_target("x86-cpu")
    fill_db(db_path, tiny_space, MS)
    scope = latency_scope(cpu, "local", "tuned-8")
    ops = ("mb_k3_e2", "zero")
    with LatencyDB(db_path) as db:
        plain_table, plain = table_from_db(tiny_space, db, scope), predict(tiny_space, ops, db, scope)
        assert plain.composition is None and plain_table.composition is None
        comp = Composition(0.01, 1.5, 2.0, 8, 0.03)
        db.put_composition(scope, tiny_space.name, tiny_space.stem().shape_text, comp)
        # another level, another space's shape: not this one's
        assert db.get_composition(scope.at_level("default"), tiny_space.name, tiny_space.stem().shape_text) is None
        assert db.get_composition(scope, tiny_space.name, "1x3x224x224") is None
    with LatencyDB(db_path) as db:  # kept in the file
        stored = db.get_composition(scope, tiny_space.name, tiny_space.stem().shape_text)
        table, calibrated = table_from_db(tiny_space, db, scope), predict(tiny_space, ops, db, scope)
    assert stored.networks == 8 and stored.measured_at
    blocks = tiny_space.blocks(ops)
    weight_mb = sum(c.weight_count for c in blocks) * 4 / 1e6
    assert calibrated.latency_ms == pytest.approx(0.01 + 1.5 * plain.latency_ms + 2.0 * weight_mb)
    assert calibrated.composition == stored
    choices = [layer.choices.index(op) for layer, op in zip(tiny_space.layers(), ops)]
    assert table.arch_ms(choices) == pytest.approx(calibrated.latency_ms)  # the search sees what export predicts
    assert table.composition == stored and plain_table.arch_ms(choices) == pytest.approx(plain.latency_ms)


def put_network_anchor(db, space, scope, latency_ms, flag=None):
    from tvmnas.latency_db import LatencyRow
    from tvmnas.measure.reference import REFERENCE_LEVEL
    from tvmnas.reference_network import reference_network_key

    db.put(LatencyRow.measured(scope.at_level(REFERENCE_LEVEL), *reference_network_key(space, scope.level),
                               target_name="x86-cpu", device="local", latency_ms=latency_ms, raw_ms=latency_ms,
                               dispersion=0.01, windows=100, dropped_windows=0, speed=1.0, compile_s=1.0,
                               tune_s=1.0, tasks_tuned=0, error=None, flag=flag))


def test_the_reference_networks_ratio_scales_every_block_until_a_fit_is_stored(tiny_space, tmp_path):
    db_path, cpu = tmp_path / "lat.db", load_target("x86-cpu")
    fill_db(db_path, tiny_space, MS)
    scope = latency_scope(cpu, "local", "tuned-8")
    ops = ("mb_k3_e2", "zero")
    choices = [layer.choices.index(op) for layer, op in zip(tiny_space.layers(), ops)]
    with LatencyDB(db_path) as db:
        plain = predict(tiny_space, ops, db, scope).latency_ms
        reference_blocks = predict(tiny_space, tiny_space.mobilenetv2_ops, db, scope).latency_ms
        assert predict(tiny_space, ops, db, scope).composition is None  # no anchor yet: the plain sum
        # a flagged anchor scales too: the export's measurement is scaled by the same anchor, flagged or not
        put_network_anchor(db, tiny_space, scope, 0.8 * reference_blocks, flag="noisy: ...")
        assert predict(tiny_space, ops, db, scope).latency_ms == pytest.approx(0.8 * plain)
        put_network_anchor(db, tiny_space, scope, 0.9 * reference_blocks)  # a new anchor replaces the old
        scaled, table = predict(tiny_space, ops, db, scope), table_from_db(tiny_space, db, scope)
        assert scaled.latency_ms == pytest.approx(0.9 * plain)
        assert (scaled.composition.networks, scaled.composition.scale) == (1, pytest.approx(0.9))
        assert table.arch_ms(choices) == pytest.approx(scaled.latency_ms)
        # the reference network itself is predicted at what the profile timed it
        assert predict(tiny_space, tiny_space.mobilenetv2_ops, db, scope).latency_ms == pytest.approx(
            0.9 * reference_blocks)
        assert predict(tiny_space, ops, db, scope.at_level("default")) is None  # no rows at that level
        fitted = db.put_composition(scope, tiny_space.name, tiny_space.stem().shape_text,
                                    Composition(0.0, 1.3, 0.0, 8, 0.02))
        assert predict(tiny_space, ops, db, scope).composition == fitted  # a fit on sampled networks wins


class ScriptedTimes(LocalRunner):
    """Builds for real, reports the given latencies (one network flagged) instead of timing."""

    def __init__(self, latency_of):
        super().__init__()
        self.latency_of = latency_of

    def measure(self, batch, protocol, on_round=None):
        estimates = [Estimate(self.latency_of(i), self.latency_of(i), 0.01, 10, 0, "noisy" if i == 2 else None)
                     for i in range(len(batch.libs))]
        return Interleaved(estimates, None, 1.0, 0.1, 10)


def test_calibrate_builds_whole_networks_fits_what_was_kept_and_stores_it(tiny_space, tmp_path):
    db_path, cpu = tmp_path / "lat.db", load_target("x86-cpu")
    fill_db(db_path, tiny_space, MS, level="default")
    scope = latency_scope(cpu, "local", "default")
    archs = calibration_archs(tiny_space, lambda layer, op: 0.0 if op == "zero" else MS[op], 6,
                              np.random.default_rng(4))
    sums = [sum(MS[c.part] if c.part != "layer" else MS[c.op] for c in tiny_space.blocks(ops)) for ops in archs]
    with LatencyDB(db_path) as db:  # a runner that reports 1.3 x each network's blocks
        result = calibrate(tiny_space, cpu, ScriptedTimes(lambda i: 1.3 * sums[i]), db, 0,
                           tuning_dir(db_path, cpu, "local"), 6, seed=4)
        stored = db.get_composition(scope, tiny_space.name, tiny_space.stem().shape_text)
    assert [n.ops for n in result.networks] == archs  # the seed fixes the networks
    assert [n.blocks_ms for n in result.networks] == pytest.approx(sums)
    assert len(result.networks) == 6 and result.networks[2].flag == "noisy"
    assert result.composition.networks == 5  # the flagged one is left out
    assert result.composition.scale == pytest.approx(1.3, rel=1e-6) and result.composition.intercept_ms < 1e-9
    assert stored == result.composition
    assert all(n.weight_mb == pytest.approx(sum(c.weight_count for c in tiny_space.blocks(n.ops)) * 4 / 1e6)
               for n in result.networks)


def test_calibrate_needs_the_space_profiled(tiny_space, tmp_path):
    db_path, cpu = tmp_path / "lat.db", load_target("x86-cpu")
    fill_db(db_path, tiny_space, MS, level="default", skip="mb_k3_e2_i8_o8_s1")
    with LatencyDB(db_path) as db, pytest.raises(TvmnasError, match="needs every candidate profiled"):
        calibrate(tiny_space, cpu, LocalRunner(), db, 0, tuning_dir(db_path, cpu, "local"), 5)
