"""Progress on stderr: a bar per phase of a long step (compile, measure, tune), and per-epoch bars with one summary
line per epoch on stdout (search and train)."""

from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Callable


@contextmanager
def phase_progress(label: str):
    """Yields a callback (phase, done, total, detail) that keeps one bar per phase, labelled `label phase`."""
    from tqdm import tqdm

    bars: dict[str, tqdm] = {}

    def step(phase: str, done: int, total: int, detail: str = "") -> None:
        bar = bars.get(phase)
        if bar is None:
            for other in bars.values():
                other.close()
            bar = bars[phase] = tqdm(total=total, desc=f"{label} {phase}", file=sys.stderr, leave=False)
        if bar.total != total:
            bar.total = total
        if detail:
            bar.set_postfix_str(detail, refresh=False)
        bar.update(done - bar.n)

    try:
        yield step
    finally:
        for bar in bars.values():
            bar.close()


@contextmanager
def epoch_progress(summary: Callable[[dict], str], enabled: bool = True):
    """Yields (on_step, on_epoch) callbacks; `summary` turns an epoch's log entry into its line. Not `enabled`
    (ranks other than 0 of a distributed run): callbacks that do nothing."""
    from tqdm import tqdm

    if not enabled:
        yield None, None
        return
    bars: list = []  # made at the first step: nothing shows before the work starts (or when it is refused)

    def on_step(step: int, total: int) -> None:
        if not bars:
            bars.append(tqdm(total=total, unit="step", file=sys.stderr, leave=False))
        if bars[0].total != total:
            bars[0].reset(total=total)
        bars[0].update(1)

    def on_epoch(entry: dict) -> None:
        if bars:
            bars[0].reset()
        tqdm.write(summary(entry), file=sys.stdout)

    try:
        yield on_step, on_epoch
    finally:
        for bar in bars:
            bar.close()
