"""The epoch loop that search and training share: run an epoch, log it, save, and let a kill at any point resume.

Order per epoch: the epoch runs (`one_epoch` returns its log entry, without epoch number and seconds), its entry
joins the log, rank 0 saves the checkpoint (which carries the whole log) and then appends the entry to the log
file, then the caller hears of it. A kill between the two writes leaves a checkpoint whose log is the truth; on
resume, the run folder's log file is rewritten from it (`start_log`).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from tvmnas.dist import World
from tvmnas.errors import TvmnasError
from tvmnas.failpoints import stop_point
from tvmnas.run_folder import append_log, write_log


def check_same_settings(saved: dict, current: dict, path: Path) -> None:
    """Resume only with the settings the checkpoint was made with (one line naming those that differ)."""
    if saved != current:
        diff = sorted(k for k in set(current) | set(saved) if saved.get(k) != current.get(k))
        raise TvmnasError(f"{path} was made with other settings ({', '.join(diff)} differ)")


def start_log(log_path: Path, log: list[dict], world: World) -> None:
    """Rank 0 writes the log file as the checkpoint has it (empty for a new run)."""
    if world.is_main:
        write_log(log_path, log)


def run_epochs(epochs: range, one_epoch: Callable[[int], dict], save: Callable[[], None], log: list[dict],
               log_path: Path, failpoint: str, world: World,
               on_epoch: Callable[[dict], None] | None = None) -> None:
    """Run the epochs in order (see the module's docstring); `save` writes the checkpoint, with `log` in it."""
    for epoch in epochs:
        start = time.perf_counter()
        entry = {"epoch": epoch, **one_epoch(epoch)}
        entry["seconds"] = time.perf_counter() - start
        log.append(entry)
        if world.is_main:
            save()
            append_log(log_path, entry)
            stop_point(failpoint)
        if on_epoch:
            on_epoch(entry)
