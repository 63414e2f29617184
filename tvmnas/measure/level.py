"""Compilation levels, named in one place: `default` (TVM's default pipeline) or `tuned-N` (each fused kernel
scheduled with the best of its first N meta-schedule records; see `tvmnas.measure.compile`). Light: the CLI
imports it without torch or TVM."""

from __future__ import annotations

from tvmnas.errors import TvmnasError

DEFAULT_LEVEL = "default"
DEFAULT_TUNE_TRIALS = 8  # meta-schedule trials per fused kernel unless the user says otherwise


def level_name(tune_trials: int) -> str:
    return DEFAULT_LEVEL if tune_trials <= 0 else f"tuned-{tune_trials}"


def parse_level(name: str) -> int:
    """The tuning trials a level name stands for (0 for `default`); the inverse of `level_name`."""
    if name == DEFAULT_LEVEL:
        return 0
    prefix, _, trials = name.partition("-")
    if prefix != "tuned" or not trials.isdigit() or int(trials) < 1 or trials != str(int(trials)):
        raise TvmnasError(f"unknown compilation level {name!r}: expected {DEFAULT_LEVEL!r} or 'tuned-N' (N >= 1)")
    return int(trials)
