"""What every benchmark records beside its numbers (the CPU model, the commit, the date, the versions), and how it
writes its results: `<prefix>.json` ({"summary", "meta", "entries"}) and `<prefix>.md` (a short table)."""

from __future__ import annotations

import json
import os
import platform
import shlex
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

from tvmnas.files import default_db

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
DEFAULT_DB = default_db()


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def commit() -> str:
    def git(*args) -> str:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True).stdout.strip()

    head = git("rev-parse", "--short=12", "HEAD") or "unknown"
    # results written since the commit (this bench's own, or another's running beside it) are not code changes
    changed = git("status", "--porcelain", "--untracked-files=no", "--", ".", ":!bench/results")
    return head + ("+uncommitted" if changed else "")


def meta(command: str) -> dict:
    import tvm
    from tvm.target.codegen import llvm_get_system_cpu

    return {"cpu_model": cpu_model(), "llvm_cpu": llvm_get_system_cpu(), "cores": os.cpu_count(),
            "commit": commit(), "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "tvm_version": tvm.__version__, "python": platform.python_version(), "command": command,
            # what else ran: near 0 on an idle machine, near the core count while another job held every core
            "load_average_1_5_15_min": [round(v, 2) for v in os.getloadavg()]}


def results_name(name: str, out_dir: Path = RESULTS) -> str:
    """The file name this machine's results of `name` go under: `name` itself, unless `name` holds results measured
    on another CPU (by LLVM's name for it: VMs of one kind report one model name for several CPU generations),
    which are kept: then `<name>_<LLVM CPU name>` (e.g. `runtimes_emeraldrapids`)."""
    from tvm.target.codegen import llvm_get_system_cpu

    earlier = out_dir / f"{name}.json"
    try:
        earlier_meta = json.loads(earlier.read_text())["meta"] if earlier.exists() else {}
    except (ValueError, KeyError, TypeError):
        earlier_meta = {}
    this_cpu = llvm_get_system_cpu()
    if "llvm_cpu" in earlier_meta:
        same = earlier_meta["llvm_cpu"] == this_cpu
    else:  # recorded before the LLVM name was: by the model name, where there is one
        same = earlier_meta.get("cpu_model", cpu_model()) == cpu_model()
    return name if same else f"{name}_{this_cpu}"


def write_results(name: str, summary: dict, entries: list, markdown: list[str], command: str,
                  out_dir: Path = RESULTS, per_cpu: bool = True) -> Path:
    """bench/results/<name>.json and .md; the Markdown ends with the machine, commit, date and command. Results
    that depend on the CPU (`per_cpu`) never replace another CPU model's (see results_name); those that do not
    (accuracies on a pinned latency table) keep one file whatever the machine."""
    out_dir.mkdir(parents=True, exist_ok=True)
    if per_cpu:
        name = results_name(name, out_dir)
    info = meta(command)
    (out_dir / f"{name}.json").write_text(json.dumps({"summary": summary, "meta": info, "entries": entries},
                                                     indent=1) + "\n")
    load = "/".join(map(str, info["load_average_1_5_15_min"]))
    footer = ["", f"Measured on {info['cpu_model']} (LLVM: {info['llvm_cpu']}, {info['cores']} cores), commit "
                  f"{info['commit']}, {info['date']}, TVM {info['tvm_version']}; load average at the end {load} "
                  f"(1/5/15 min).", "", f"Command: `{command}`"]
    (out_dir / f"{name}.md").write_text("\n".join(markdown + footer) + "\n")
    print("\n".join(markdown + footer))
    return out_dir / f"{name}.json"


def command_line() -> str:
    return "python " + shlex.join([os.path.relpath(sys.argv[0], REPO), *sys.argv[1:]])


def learned_tensors(checkpoint: Path, key: str) -> dict:
    """The learned tensors a checkpoint keeps under `key` (weights and alphas; not the BatchNorm running statistics,
    which are measured again for evaluation)."""
    import torch

    state = torch.load(checkpoint, weights_only=True)[key]
    return {k: v for k, v in state.items() if "running_" not in k and "num_batches" not in k}


def max_abs_diff(a: dict, b: dict, which=lambda key: True) -> float:
    """The largest element-wise difference between two dicts of tensors (the keys `which` accepts)."""
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a if which(k))
