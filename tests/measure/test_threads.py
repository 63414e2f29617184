"""TVM's CPU thread pool runs the target's thread count (its own default on x86 is half the cores)."""

import os
import subprocess
import sys

from tvmnas.targets import load_target

SCRIPT = """
import sys
import tvm
from tvmnas.measure.runner.base import set_threads
set_threads(int(sys.argv[1]))
print(tvm.get_global_func("runtime.NumThreads")())
"""


def pool_threads(requested: int) -> int:
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(requested)], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[-1])


def test_pool_runs_the_targets_threads():
    cores = len(os.sched_getaffinity(0))
    assert load_target("x86-cpu").runtime_threads == os.cpu_count()
    assert pool_threads(cores) == cores
    assert pool_threads(1) == 1
