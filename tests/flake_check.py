"""Run the fault tests (and the integration tier) many times in a row, each a fresh pytest, and report any
failure: a flaky test is found here, before CI meets it. `make flake-check` runs it.

Usage: python tests/flake_check.py [--fault-runs N] [--integration-runs M] [--logs DIR]
                                   [--record PREFIX [--resume]]
Prints one line per run and a tally; exits 1 when any run failed. Each run's output (with the slowest tests) is
kept under --logs. --resume continues a check cut short (a session's end): the runs recorded at PREFIX count when
they ran at this commit (a clean tree), with the same planned counts, on this kind of machine; the rest run."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

TIERS = {"fault": ["-m", "fault and not integration"], "integration": ["-m", "integration"]}


def run_tier(name: str, runs: int, logs: Path, lines: list[str], done: dict[str, list[bool]],
             after_each=lambda: None) -> None:
    """Run the tier until it has `runs` runs, appending each run's line to `lines` and its outcome to `done[name]`;
    `after_each` runs after every run (the record is kept up to date: a long check cut short keeps what it did)."""
    for i in range(len(done.get(name, [])) + 1, runs + 1):
        start = time.monotonic()
        proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--durations=5",
                               *TIERS[name]], capture_output=True, text=True)
        log = logs / f"{name}-{i}.log"
        log.write_text(proc.stdout + proc.stderr)
        tail = (proc.stdout.strip().splitlines() or ["(no output)"])[-1]
        ok = proc.returncode == 0 and "passed" in tail  # a tier whose every test skipped has not run
        if not ok:
            tail += f" (output in {log})"
        lines.append(f"{name} {i}/{runs}: {'ok' if ok else 'FAILED'} in {time.monotonic() - start:.0f} s: {tail}")
        done.setdefault(name, []).append(ok)
        print(lines[-1], flush=True)
        after_each()


def tally_of(done: dict[str, list[bool]], counts: dict[str, int]) -> str:
    return "; ".join(f"{name}: {sum(oks)}/{len(oks)} runs passed"
                     + (f" (of {counts[name]} planned)" if len(oks) < counts[name] else "")
                     for name, oks in done.items())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fault-runs", type=int, default=20)
    parser.add_argument("--integration-runs", type=int, default=10)
    parser.add_argument("--logs", type=Path, default=Path("build/flake-check"))
    parser.add_argument("--record", type=Path, help="also write the tally to PREFIX.json and PREFIX.md (after "
                                                    "every run)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the check recorded at --record (same commit, same planned counts)")
    args = parser.parse_args()
    args.logs.mkdir(parents=True, exist_ok=True)
    counts = {"fault": args.fault_runs, "integration": args.integration_runs}
    lines: list[str] = []
    done: dict[str, list[bool]] = {}
    commands = [" ".join(sys.argv)]
    if args.resume:
        if not args.record:
            parser.error("--resume needs --record")
        try:
            lines, done, commands = resumed(args.record, counts)
        except ValueError as e:
            print(f"flake_check: error: cannot resume {args.record}: {e}", file=sys.stderr)
            return 2
        commands.append(" ".join(sys.argv))

    def save() -> None:
        if args.record:
            summary = {f"{name}_{what}": value for name, planned in counts.items()
                       for what, value in (("passed", sum(done.get(name, []))), ("runs", len(done.get(name, []))),
                                           ("planned", planned))}
            record(args.record, summary, lines, tally_of(done, counts), commands)

    for name, runs in counts.items():
        if runs > 0:
            run_tier(name, runs, args.logs, lines, done, save)
    print(tally_of(done, counts))
    return 0 if all(all(oks) for oks in done.values()) else 1


def git(*a) -> str:
    return subprocess.run(["git", *a], capture_output=True, text=True).stdout.strip()


def commit() -> str:
    """The commit under test; the record's own files (and other results) are not code changes."""
    return git("rev-parse", "--short=12", "HEAD") + ("+uncommitted" if git(
        "status", "--porcelain", "--untracked-files=no", "--", ".", ":!bench/results") else "")


def machine() -> dict:
    import platform

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    return {"cpu_model": cpu, "cores": os.cpu_count()}


def resumed(prefix: Path, counts: dict[str, int]) -> tuple[list[str], dict[str, list[bool]], list[str]]:
    """The lines, outcomes and commands of the check recorded at `prefix`; ValueError when it was at another
    commit or planned other counts (its runs would not be runs of this check)."""
    import json
    try:
        saved = json.loads(prefix.with_suffix(".json").read_text())
        meta, summary, entries = saved["meta"], saved["summary"], list(saved["entries"])
        done: dict[str, list[bool]] = {}
        for line in entries:
            name, rest = line.split(" ", 1)
            done.setdefault(name, []).append(rest.split(": ", 2)[1].startswith("ok"))
        commands = meta.get("commands") or [meta["command"]]
        here = machine()
        recorded = {key: meta[key] for key in here}
    except (OSError, ValueError, KeyError, IndexError, TypeError) as e:
        raise ValueError(f"no readable record ({type(e).__name__}: {e})") from None
    if commit().endswith("+uncommitted"):
        raise ValueError("the tree has uncommitted changes: commit them, then start a check")
    if meta["commit"] != commit():
        raise ValueError(f"it was recorded at commit {meta['commit']}, this is {commit()}")
    if recorded != here:
        raise ValueError(f"it ran on {recorded}, this is {here}")
    for name, planned in counts.items():
        if summary.get(f"{name}_planned", 0) != planned:
            raise ValueError(f"it planned {summary.get(f'{name}_planned', 0)} {name} runs, not {planned}")
    return entries, done, commands


def record(prefix: Path, summary: dict, lines: list[str], tally: str, commands: list[str]) -> None:
    import json
    from datetime import datetime, timezone

    meta = {**machine(), "commit": commit(),
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "command": commands[0],
            "commands": commands}
    prefix.parent.mkdir(parents=True, exist_ok=True)
    prefix.with_suffix(".json").write_text(json.dumps({"summary": summary, "meta": meta, "entries": lines},
                                                      indent=1) + "\n")
    prefix.with_suffix(".md").write_text("\n".join(
        ["## Fault tests repeated (flake check)", "", tally, "", *[f"- {line}" for line in lines], "",
         f"Measured on {meta['cpu_model']} ({meta['cores']} cores), commit {meta['commit']}, {meta['date']}.", "",
         "Command: " + ", resumed with ".join(f"`{c}`" for c in commands)]) + "\n")


if __name__ == "__main__":
    sys.exit(main())
