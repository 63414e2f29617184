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
def epoch_progress(summary: Callable[[dict], str]):
    """Yields (on_step, on_epoch) callbacks; `summary` turns an epoch's log entry into its line."""
    from tqdm import tqdm

    bar = tqdm(total=0, unit="step", file=sys.stderr, leave=False)

    def on_step(step: int, total: int) -> None:
        if bar.total != total:
            bar.reset(total=total)
        bar.update(1)

    def on_epoch(entry: dict) -> None:
        bar.reset()
        tqdm.write(summary(entry), file=sys.stdout)

    try:
        yield on_step, on_epoch
    finally:
        bar.close()
