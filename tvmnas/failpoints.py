"""Named points at which a fault test can stop this process, so that it kills it exactly there.

`TVMNAS_STOP_AT=NAME[:N]` in the environment makes the process stop itself (SIGSTOP) the N-th time (default: the
first) it passes `stop_point(NAME)`; the test sees the stopped state and sends SIGKILL. A kill then lands at a
point the code names, not at a moment a watcher guesses. Without the variable a stop point does nothing.

The points: `tune-trials-saved` (a batch of meta-schedule trials is in the tuning records), `search-epoch-saved`
and `train-epoch-saved` (an epoch's checkpoint and log line are written), `export-bundle-written` (a complete bundle
in its partial folder, before it takes the output folder's place).
"""

from __future__ import annotations

import os
import signal
import threading

ENV = "TVMNAS_STOP_AT"
_passes: dict[str, int] = {}
_lock = threading.Lock()


def stop_point(name: str) -> None:
    spec = os.environ.get(ENV)
    if not spec:
        return
    wanted, _, count = spec.partition(":")
    if wanted != name:
        return
    with _lock:
        _passes[name] = _passes.get(name, 0) + 1
        hit = _passes[name] == int(count or 1)
    if hit:
        os.kill(os.getpid(), signal.SIGSTOP)
