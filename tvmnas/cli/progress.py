"""A per-epoch progress bar on stderr, with one summary line per epoch on stdout (search and train)."""

from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Callable


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
