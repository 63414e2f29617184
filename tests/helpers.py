"""Shared test settings."""

from tvmnas.measure.protocol import Protocol

# The measurement protocol cut down to a fraction of a second: the code paths, not the numbers.
FAST = Protocol(windows=3, samples_per_window=2, sample_ms=0.5, warmup_ms=1.0, reference_every=2)


def fill_db(path, space, latency_ms: dict, level: str = "tuned-8", skip: str | None = None,
            target: str = "x86-cpu") -> None:
    """A latency database filled by hand (as if measured locally for `target`): `latency_ms` by part (stem, first,
    head) or by layer op."""
    from tvmnas.latency_db import LatencyDB, LatencyRow
    from tvmnas.measure.method import latency_scope
    from tvmnas.targets import load_target

    scope = latency_scope(load_target(target), "local", level)
    with LatencyDB(path) as db:
        for cand in space.candidates():
            if cand.key == skip:
                continue
            ms = latency_ms[cand.part] if cand.part != "layer" else latency_ms[cand.op]
            db.put(LatencyRow.measured(scope, cand.key, cand.shape_text, target_name=target, device="local",
                                       latency_ms=ms, raw_ms=ms, dispersion=0.01, windows=120, dropped_windows=0,
                                       speed=1.0, compile_s=1.0, tune_s=1.0, tasks_tuned=1, error=None))


def kill_at_stop_point(proc, timeout_s: float = 600) -> None:
    """Wait until a process of `proc`'s tree has stopped itself at its failpoint (see `tvmnas.failpoints`), then
    SIGKILL the whole tree there (under torchrun, rank 0 stops and the other ranks wait for it)."""
    import os
    import signal
    import time

    import psutil

    def stopped() -> bool:
        try:
            root = psutil.Process(proc.pid)
            return any(p.status() == psutil.STATUS_STOPPED for p in [root, *root.children(recursive=True)])
        except psutil.NoSuchProcess:
            return False

    deadline = time.monotonic() + timeout_s
    while not stopped():
        assert proc.poll() is None, f"ended without passing its failpoint: {proc.communicate()}"
        assert time.monotonic() < deadline, "never reached its failpoint"
        time.sleep(0.05)
    tree = psutil.Process(proc.pid).children(recursive=True)  # torchrun starts each rank in a session of its own
    os.killpg(proc.pid, signal.SIGKILL)
    for child in tree:
        try:
            child.kill()
        except psutil.NoSuchProcess:
            pass
    proc.wait()
    psutil.wait_procs(tree, timeout=30)
