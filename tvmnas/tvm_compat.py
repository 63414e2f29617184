"""Every place where tvmnas reaches past TVM 0.27's public API, in one file, each with why.

TVM changes fast (0.2x renamed whole packages); when the version changes, this is the file to read again. Where
TVM offers an extension point, tvmnas uses it instead (derived builder, runner and measure-callback objects live
beside the code that needs them, in `tvmnas.measure.tuning`).
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import sys
import types

from tvmnas.errors import TvmnasError

SUPPORTED_TVM = "0.27"  # what the workarounds below were written for (see ../shared/TVM-0.27-FACTS.md)
SCHEDULED_ATTR = "tirx.is_scheduled"  # a PrimFunc attribute: already scheduled, the default pipeline leaves it
_INTRIN_PACKAGE = "tvm.s_tir.tensor_intrin"


def check_tvm_version() -> None:
    """Refuse, in one line, a TVM other than the one these workarounds are for."""
    import tvm

    if not tvm.__version__.startswith(SUPPORTED_TVM):
        raise TvmnasError(f"tvmnas works with apache-tvm {SUPPORTED_TVM}.x, this is {tvm.__version__}: "
                          f"install the version in constraints.txt")


def normalize_kernel(kernel):
    """The IRModule meta-schedule keys a kernel's workload by (`tune_context._normalize_mod`, private: the public
    tuning entry points apply it internally, but tvmnas looks workloads up and commits them itself)."""
    from tvm.s_tir.meta_schedule.tune_context import _normalize_mod

    return _normalize_mod(kernel)


def load_tensor_intrinsics(modules: tuple[str, ...]) -> None:
    """Register only the named backends' tensor intrinsics (`x86`, `arm_cpu`, `cuda`) before meta-schedule or a
    GPU pipeline asks for `tvm.s_tir.tensor_intrin`.

    Why: that package's `__init__` registers every backend's intrinsics (18 s for CUDA's alone on these
    machines). An empty package is put in `sys.modules` in its place, and the needed submodules are imported
    into it; a later call for another target imports that target's submodule too, so every target of the process
    finds its intrinsics.
    """
    if _INTRIN_PACKAGE not in sys.modules:
        import tvm.s_tir

        spec = importlib.util.find_spec(_INTRIN_PACKAGE)
        package = types.ModuleType(_INTRIN_PACKAGE)
        package.__path__ = list(spec.submodule_search_locations)
        package.__spec__ = spec
        package.__package__ = _INTRIN_PACKAGE
        sys.modules[_INTRIN_PACKAGE] = package
        tvm.s_tir.tensor_intrin = package
    for name in modules:
        importlib.import_module(f"{_INTRIN_PACKAGE}.{name}")


def give_rpc_runner_a_deadline(runner, workers: int, timeout_s: int) -> None:
    """Replace meta-schedule's RPCRunner pool by one whose calls time out.

    Why: RPCRunner builds its PopenPoolExecutor without a timeout and takes none, so a trial sent to a server
    that stops answering waits forever (a frozen board hung whole profiles). Its own pool is replaced right
    after construction, before any trial ran, so nothing leaks but an idle pool object.
    """
    from tvm.support.popen_pool import PopenPoolExecutor

    runner.pool = PopenPoolExecutor(max_workers=workers, timeout=timeout_s)


def request_server(tracker_host: str, tracker_port: int, key: str, priority: int = 1,
                   session_timeout_s: float = 0, max_retry: int = 5, wait_s: float | None = None):
    """(session, (host, port)): a session on a server the tracker hands out under `key`, and that server's address.
    Raises TimeoutError when no server under the key is free within `wait_s` (None: wait as long as it takes).

    Why: `TrackerSession.request` returns the session alone, and the farm names the server whose session it drops
    (tests inject faults into exactly that server). These are its few lines (its socket, `base.sendjson` and
    `recvjson`), with the address kept; like it, a failed connection is retried with another request.
    """
    from tvm import rpc
    from tvm.rpc import base

    tracker = rpc.connect_tracker(tracker_host, tracker_port)
    last_error: Exception | None = None
    for _ in range(max_retry):
        try:
            if tracker._sock is None:
                tracker._connect()
            tracker._sock.settimeout(wait_s)
            base.sendjson(tracker._sock, [base.TrackerCode.REQUEST, key, "", priority])
            answer = base.recvjson(tracker._sock)
            if answer[0] != base.TrackerCode.SUCCESS:
                raise RuntimeError(f"the tracker answered {answer!r}")
            host, port, matchkey = answer[1]
            return rpc.connect(host, port, matchkey, session_timeout_s), (host, int(port))
        except TimeoutError:
            tracker.close()  # the tracker drops the request with the connection
            raise TimeoutError(f"no server under key {key!r} was free within {wait_s:g} s") from None
        except OSError as err:
            tracker.close()
            last_error = err
        except RuntimeError as err:
            last_error = err
    raise RuntimeError(f"no session under key {key!r} after {max_retry} tries: {last_error}")


def load_cost_model(model, path: str) -> None:
    """`XGBModel.load`, without xgboost's warning about the file name.

    Why: meta-schedule's XGBModel packs its booster as `model.bin` inside its archive, a name from which xgboost
    3 cannot tell the format: every load warns "Unknown file format: `bin`" and every save "Saving model in the
    UBJSON format as default", though both are right. The name is TVM's; xgboost's log is silenced for these two
    calls only.
    """
    import xgboost as xgb

    with xgb.config_context(verbosity=0):
        model.load(path)


def save_cost_model(model, path: str) -> None:
    """`XGBModel.save`, without xgboost's warning about the file name (see `load_cost_model`)."""
    import xgboost as xgb

    with xgb.config_context(verbosity=0):
        model.save(path)


def build_trial(mod, target):
    """One meta-schedule trial's runtime module, built as meta-schedule's LocalBuilder builds it (its
    `default_build`: weight-layout rewrite blocks removed, then TIR's build), in this process instead of
    LocalBuilder's worker pool.

    Why not `default_build` itself: it calls `tvm.driver.build`, deprecated in TVM 0.27 (a DeprecationWarning for
    every trial) for `tvm.tirx.build`, which it forwards to."""
    import tvm
    from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock

    return tvm.tirx.build(RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(mod), target=target)


def trial_result(times_s: list[float] | None = None, error: str | None = None):
    """A finished trial's runner future (`LocalRunnerFuture`, the ready-made one meta-schedule's RunnerFuture API
    lacks): its run times, or why it failed."""
    from tvm.s_tir.meta_schedule.runner.local_runner import LocalRunnerFuture

    return LocalRunnerFuture(res=times_s) if error is None else LocalRunnerFuture(error_message=error)


def parse_workload(line: str):
    """One line of a JSON database's workload file (the file format of `JSONDatabase`, read directly: tvmnas
    repairs databases meta-schedule refuses to load, and reads records in commit order, which its API hides)."""
    from tvm.s_tir.meta_schedule.database import Workload

    return Workload.from_json(json.loads(line))


def parse_record(line: str, workload_of) -> tuple[int, object]:
    """One line of a JSON database's record file: (workload index, TuningRecord); `workload_of(index)` gives the
    workload (raises when the trace does not load on it)."""
    from tvm.s_tir.meta_schedule.database import TuningRecord

    index, record = json.loads(line)
    return index, TuningRecord.from_json(record, workload_of(index))


def apply_tuning_records(fused_mod, database, top_k: int = 8):
    """Schedule each kernel that the database knows with the fastest of its records that replays.

    Why not Relax's MetaScheduleApplyDatabase: the database matches kernels by structure, but a trace names
    blocks, and that pass replays the trace on the module's own kernel: it fails the whole compilation when the
    names differ (the head's pooling inside a network vs alone). Here the trace is replayed on the database's
    own copy of the kernel, and the scheduled copy takes the kernel's place. A kernel without a usable record
    keeps its default schedule.
    """
    import tvm
    from tvm.s_tir.schedule import Schedule

    fused_mod = tvm.IRModule(dict(fused_mod.functions_items()), attrs=fused_mod.attrs)
    for gvar, func in list(fused_mod.functions_items()):
        if not isinstance(func, tvm.tirx.PrimFunc) or not database.has_workload(normalize_kernel(func)):
            continue
        workload = database.commit_workload(normalize_kernel(func))
        for record in database.get_top_k(workload, top_k):
            sch = Schedule(workload.mod)
            try:
                record.trace.apply_to_schedule(sch, remove_postproc=False)
            except Exception:  # noqa: BLE001 - try the next record
                continue
            scheduled = sch.mod["main"].with_attr("global_symbol", gvar.name_hint)
            fused_mod.update_func(gvar, scheduled.with_attr(SCHEDULED_ATTR, True))
            break
    return fused_mod


def onnx_clip_as_relax_clip():
    """A context in which TVM's ONNX frontend imports a float Clip with constant bounds (a ReLU6) as `relax.clip`,
    not as two kernels of its own (`Clip._impl_v1` and `_impl_v13`, which `_impl_v11` calls, emit `topi.maximum`/
    `topi.minimum` through `emit_te`): a layout pass follows relax ops only, and every ReLU6 would otherwise cut a
    network's blocked layout. Other Clips import as before."""
    import contextlib

    import numpy as np
    from tvm import relax
    from tvm.ir.expr import GenericConst
    from tvm.relax.frontend.onnx import onnx_frontend

    clip = onnx_frontend.Clip
    originals = {name: vars(clip)[name] for name in ("_impl_v1", "_impl_v13")}

    def bound(expr, default: float) -> float | None:
        if expr is None:
            return default
        data = expr.value.numpy() if isinstance(expr, GenericConst) else None  # a constant tensor
        if data is not None and data.size == 1 and not np.isnan(float(data.reshape(()))):
            return float(data.reshape(()))
        return None

    def as_relax_clip(x, low: float | None, high: float | None):
        if low is None or high is None or not str(x.ty.dtype).startswith("float"):
            return None
        return relax.op.clip(x, low, high)

    def impl_v1(cls, bb, inputs, attr, params):
        out = as_relax_clip(inputs[0], float(attr.get("min", -np.inf)), float(attr.get("max", np.inf)))
        return out if out is not None else originals["_impl_v1"].__func__(cls, bb, inputs, attr, params)

    def impl_v13(cls, bb, inputs, attr, params):
        out = as_relax_clip(inputs[0], bound(inputs[1], -np.inf), bound(inputs[2], np.inf))
        return out if out is not None else originals["_impl_v13"].__func__(cls, bb, inputs, attr, params)

    @contextlib.contextmanager
    def patched():
        clip._impl_v1, clip._impl_v13 = classmethod(impl_v1), classmethod(impl_v13)
        try:
            yield
        finally:
            for name, method in originals.items():
                setattr(clip, name, method)
    return patched()
