"""Shared test settings."""

from tvmnas.measure.protocol import Protocol

# The measurement protocol cut down to a fraction of a second: the code paths, not the numbers.
FAST = Protocol(windows=3, samples_per_window=2, sample_ms=0.5, warmup_ms=1.0, reference_every=2)


def fill_db(path, space, latency_ms: dict, level: str = "tuned-8", skip: str | None = None) -> None:
    """A latency database filled by hand: `latency_ms` by part (stem, first, head) or by layer op."""
    from tvmnas.latency_db import LatencyDB, LatencyRow
    from tvmnas.measure.method import METHOD
    from tvmnas.targets import load_target
    from tvmnas.versions import tvm_version

    fp = load_target("x86-cpu").fingerprint("local")
    with LatencyDB(path) as db:
        for cand in space.candidates():
            if cand.key == skip:
                continue
            ms = latency_ms[cand.part] if cand.part != "layer" else latency_ms[cand.op]
            db.put(LatencyRow(fp, tvm_version(), cand.key, cand.shape_text, level, METHOD, "x86-cpu", "local", ms, ms,
                              0.01, 120, 0, 1.0, 1.0, 1.0, 1, None))
