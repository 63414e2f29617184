"""The measurement protocol on synthetic devices whose speed changes in phases (no TVM)."""

import numpy as np
import pytest

from tvmnas.measure.protocol import (SINGLE, Estimate, Protocol, measure_interleaved, quantile, ratio_estimate,
                                     round_order, round_plan, single_protocol, slow_marks)


class FakeDevice:
    """A clock and a speed profile: `slowdown(t)` multiplies every module's time while t is in a slow phase."""

    def __init__(self, slowdown=lambda t: 1.0, seed=0):
        self.now, self.slowdown = 0.0, slowdown
        self.rng = np.random.default_rng(seed)
        self.calls: list[str] = []

    def clock(self) -> float:
        return self.now


class FakeTimer:
    def __init__(self, device: FakeDevice, name: str, ms: float, fail_after: int | None = None, own_slowdown=None):
        self.device, self.name, self.ms, self.fail_after = device, name, ms, fail_after
        self.own_slowdown = own_slowdown or (lambda windows: 1.0)  # a phase of this module alone
        self.windows = 0

    def per_call(self) -> float:
        jitter = 1 + abs(self.device.rng.normal(0, 0.01))
        return self.ms * self.device.slowdown(self.device.now) * self.own_slowdown(self.windows) * jitter

    def warm_up(self, warmup_ms: float) -> float:
        self.device.now += warmup_ms / 1e3
        return self.per_call()

    def window(self, calls: int, samples: int) -> list[float]:
        if self.fail_after is not None and self.windows >= self.fail_after:
            raise RuntimeError("board went away")
        self.windows += 1
        self.device.calls.append(self.name)
        out = []
        for _ in range(samples):
            ms = self.per_call()
            self.device.now += ms * calls / 1e3
            out.append(ms)
        return out


def run(device, modules, protocol, anchor_ms=None, reference_ms=0.05):
    timers = [FakeTimer(device, f"m{i}", ms) for i, ms in enumerate(modules)]
    reference = FakeTimer(device, "ref", reference_ms)
    return measure_interleaved(timers, reference, protocol, anchor_ms, clock=device.clock)


def third_slow(period_s: float, factor: float = 1.5):
    """Slow for the middle third of every period (a slow phase covering a third of the windows)."""
    return lambda t: factor if (t % period_s) > period_s / 3 and (t % period_s) < 2 * period_s / 3 else 1.0


def test_quantile_follows_numpy():
    values = [5.0, 1.0, 3.0, 2.0, 4.0, 10.0]
    for q in (0.0, 0.05, 0.25, 0.5, 1.0):
        assert quantile(values, q) == pytest.approx(np.quantile(values, q))


def test_a_slow_phase_over_a_third_of_the_windows_moves_the_estimate_less_than_the_tolerance():
    protocol = Protocol(windows=60, max_extra_rounds=0.0)
    quiet = run(FakeDevice(), [0.1, 0.4, 0.02], protocol)
    noisy = run(FakeDevice(third_slow(2.0)), [0.1, 0.4, 0.02], protocol)
    for a, b in zip(quiet.estimates, noisy.estimates):
        assert b.ok and b.latency_ms == pytest.approx(a.latency_ms, rel=0.02)
        assert b.dropped > 0  # the slow windows were recognised through the reference
    # the plain median of every window would have moved far more than that
    assert all(abs(e.windows + e.dropped - 60) < 1 for e in noisy.estimates)


def test_every_module_window_is_spread_over_the_whole_run():
    device = FakeDevice()
    protocol = Protocol(windows=10, reference_every=2)
    run(device, [0.1, 0.2, 0.3], protocol)
    order = [c for c in device.calls]
    firsts = {m: order.index(m) for m in ("m0", "m1", "m2")}
    lasts = {m: len(order) - 1 - order[::-1].index(m) for m in ("m0", "m1", "m2")}
    assert max(firsts.values()) < 6 and min(lasts.values()) > len(order) - 8
    assert [order.count(m) for m in ("m0", "m1", "m2")] == [10, 10, 10]


def test_round_order_rotates_and_the_reference_brackets_every_window():
    assert [round_order(3, r) for r in range(4)] == [[0, 1, 2], [1, 2, 0], [2, 0, 1], [0, 1, 2]]
    assert round_plan([2, 0, 1], 2) == [None, 2, 0, None, 1, None]
    assert round_plan([4], 6) == [None, 4, None]
    assert round_plan([4, 5], 1, lead=False) == [4, None, 5, None]


def test_slow_marks_use_the_reference_windows_on_both_sides():
    log = [(None, 1.0), (0, 5.0), (1, 5.0), (None, 2.0), (0, 5.0), (None, 1.0), (1, 5.0), (None, 1.0)]
    assert slow_marks(log, 1.5) == [True, True, True, False]
    assert slow_marks(log, None) == [False, False, False, False]


def test_a_run_that_is_all_slow_is_scaled_back_to_the_anchor_speed():
    slow = run(FakeDevice(lambda t: 1.3), [0.1, 0.2], Protocol(windows=40), anchor_ms=0.05)
    assert slow.speed == pytest.approx(1.3, rel=0.03)
    for e, ms in zip(slow.estimates, [0.1, 0.2]):
        assert e.latency_ms == pytest.approx(ms, rel=0.03) and e.raw_ms == pytest.approx(1.3 * ms, rel=0.03)


def test_dropped_windows_are_measured_again_and_flagged_when_the_slow_phase_lasts():
    # 40% of the planned windows lie in a slow phase; the protocol wants 80% kept: extra rounds
    protocol = Protocol(windows=40, min_kept=0.8, max_extra_rounds=0.5)
    planned_s = run(FakeDevice(), [0.1, 0.1], protocol).seconds  # how long the planned rounds last here
    passing = run(FakeDevice(lambda t: 1.5 if 0.3 * planned_s < t < 0.7 * planned_s else 1.0), [0.1, 0.1], protocol)
    assert passing.rounds > 40
    assert all(e.flag is None and e.windows >= 32 and e.dropped > 0 for e in passing.estimates)
    protocol = Protocol(windows=40, min_kept=0.8, max_extra_rounds=0.25)
    lasting = run(FakeDevice(lambda t: 1.5 if t > 0.7 * planned_s else 1.0), [0.1, 0.1], protocol)
    assert lasting.rounds == 40 + 10  # every extra round allowed
    assert all(e.flag and "slow phases" in e.flag for e in lasting.estimates)


def test_module_specific_noise_is_flagged_and_a_failing_module_fails_alone():
    device = FakeDevice()
    timers = [FakeTimer(device, "steady", 0.1),  # slow in the second half of the run, the reference is not:
              FakeTimer(device, "jumpy", 0.1, own_slowdown=lambda windows: 1.5 if windows > 15 else 1.0),
              FakeTimer(device, "dies", 0.1, fail_after=3)]
    result = measure_interleaved(timers, FakeTimer(device, "ref", 0.05), Protocol(windows=30), clock=device.clock)
    steady, jumpy, dies = result.estimates
    assert steady.ok and steady.flag is None
    assert jumpy.ok and jumpy.flag and "quarters" in jumpy.flag
    assert not dies.ok and "board went away" in dies.error


def test_a_network_judged_against_a_reference_network_keeps_its_ratio_through_a_phase_only_networks_feel():
    """A phase that slows whole networks by 1.4x but not the one-kernel reference: each network's own estimate
    moves between quarters and is flagged; its ratio to a network-sized reference does not move and is not."""
    device = FakeDevice()
    protocol = Protocol(windows=40)
    planned_s = measure_interleaved([FakeTimer(device, "n", 0.2), FakeTimer(device, "r", 0.1)],
                                    FakeTimer(device, "ref", 0.05), protocol, clock=device.clock).seconds
    device = FakeDevice()

    def networks_slow(windows):
        return 1.4 if (device.now % planned_s) > planned_s / 2 else 1.0

    def own_jump(windows):
        return networks_slow(windows) * (1.3 if windows > 20 else 1.0)

    timers = [FakeTimer(device, "net", 0.2, own_slowdown=networks_slow),
              FakeTimer(device, "jumpy", 0.2, own_slowdown=own_jump),
              FakeTimer(device, "reference network", 0.1, own_slowdown=networks_slow)]
    result = measure_interleaved(timers, FakeTimer(device, "ref", 0.05), protocol, clock=device.clock)
    net, jumpy, reference_network = result.estimates
    assert net.flag and "quarters" in net.flag and len(net.quarters_raw_ms) == 4
    ratio, spread, flag = ratio_estimate(net, reference_network, protocol)
    assert ratio == pytest.approx(2.0, rel=0.03) and spread < 0.03 and flag is None
    assert "quarters" in ratio_estimate(jumpy, reference_network, protocol)[2]  # its own jump still shows
    # too few windows outside slow phases is not a matter of timing: it flags the ratio as it flags the estimate
    few = Estimate(0.1, 0.1, 0.0, 3, 37, "noisy: only 3 of 40 windows fell outside slow phases", None, True,
                   reference_network.quarters_raw_ms)
    assert ratio_estimate(net, few, protocol)[2].startswith("the reference's estimate is doubtful: noisy: only 3")


def test_single_network_runs_span_the_minimum_time():
    device = FakeDevice()
    protocol = Protocol(windows=5, min_span_s=3.0, reference_every=1)
    result = run(device, [0.4], protocol)
    assert result.seconds >= 3.0 and result.rounds > 5


def test_a_longer_single_protocol_spans_its_time_and_waits_longer():
    assert single_protocol() == SINGLE
    longer = single_protocol(30.0)
    assert longer.min_span_s == 30.0 and longer.max_span_s == 180.0 and longer.windows == SINGLE.windows
    assert run(FakeDevice(), [0.4], longer).seconds >= 30.0
    with pytest.raises(ValueError):
        single_protocol(0.0)


def test_a_run_inside_a_long_slow_phase_waits_it_out_against_the_anchor():
    """A slow phase longer than the planned run, in which the module (many parallel kernels) slows far more than
    the reference: against the anchor it is recognised and waited out; without waiting, scaling by the speed
    alone would leave the module about 30% slow."""
    slow_until = 20.0

    def device():
        return FakeDevice(lambda t: 1.2 if t < slow_until else 1.0)

    def timed(protocol, anchor_ms):
        d = device()
        module = FakeTimer(d, "net", 0.3, own_slowdown=lambda w: 1.0)
        module.per_call = lambda: 0.3 * (1.6 if d.now < slow_until else 1.0)  # slows more than the reference
        reference = FakeTimer(d, "ref", 0.05)
        return measure_interleaved([module], reference, protocol, anchor_ms, clock=d.clock)

    quiet_anchor = 0.05
    waited = timed(Protocol(windows=40, reference_every=1, min_span_s=2.0, max_span_s=60.0), quiet_anchor)
    assert waited.estimates[0].latency_ms == pytest.approx(0.3, rel=0.03) and waited.seconds > slow_until
    assert waited.estimates[0].flag is None and waited.speed == pytest.approx(1.0, rel=0.03)
    hurried = timed(Protocol(windows=40, reference_every=1, min_span_s=2.0), quiet_anchor)
    assert hurried.estimates[0].latency_ms > 0.3 * 1.2 and hurried.estimates[0].flag  # flagged, still slow
    capped = timed(Protocol(windows=40, reference_every=1, min_span_s=2.0, max_span_s=10.0), quiet_anchor)
    assert capped.seconds < slow_until and capped.estimates[0].flag  # gave up at the cap, and says so
