"""Run on the GPU machine: time every bundle of a pack made by `bench/cuda_kernels.py pack` with the native runner
(no Python TVM there), and write the results as one JSON file. Needs only Python 3 and the pack.

    python3 bench/cuda_device_run.py PACK_DIR OUT.json [--span-s 3]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
from pathlib import Path


def cuda_runtime_dirs() -> list[str]:
    """Folders that may hold libcudart.so.13 (which libtvm_runtime_cuda.so needs): the CUDA toolkit's, and the
    nvidia-cuda-runtime wheel's of the Python installations there."""
    import glob
    import sys

    patterns = ["/usr/local/cuda*/lib64", "/usr/local/cuda*/targets/*/lib",
                f"{sys.prefix}/lib/python3*/site-packages/nvidia/*/lib",
                "/opt/*/.venv/lib/python3*/site-packages/nvidia/*/lib"]
    return sorted({str(Path(f).parent) for pattern in patterns for f in glob.glob(f"{pattern}/libcudart.so*")})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pack", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--span-s", type=float, default=3.0, help="the native runner's protocol span per bundle")
    args = parser.parse_args()

    index = json.loads((args.pack / "index.json").read_text())
    runner = args.pack / "bin" / "tvmnas-run"
    gpu = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
                         capture_output=True, text=True).stdout.strip()
    env = dict(os.environ, LD_LIBRARY_PATH=":".join([str((args.pack / "bin").resolve()), *cuda_runtime_dirs()]))
    results = []
    for entry in index["entries"]:
        folder = args.pack / entry["dir"]
        proc = subprocess.run([str(runner), str(folder), str(folder / entry["input"]), "--span-s",
                               str(args.span_s), "--json"],
                              capture_output=True, text=True, env=env)
        result = dict(entry)
        if proc.returncode == 0:
            result.update(json.loads(proc.stdout))
        else:
            result["error"] = (proc.stderr.strip() or f"exit {proc.returncode}").splitlines()[-1]
        results.append(result)
        print(entry["dir"], result.get("raw_ms"), result.get("error", ""), flush=True)
        args.out.write_text(json.dumps({"gpu": gpu, "space": index["space"], "target": index["target"],
                                        "tvm_version": index["tvm_version"], "span_s": args.span_s,
                                        "entries": results}, indent=1) + "\n")  # after each: a run cut short


if __name__ == "__main__":
    main()
