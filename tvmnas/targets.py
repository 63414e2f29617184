"""Hardware targets: one JSON file each in `targets/`, looked up by name.

A file gives the TVM target as a JSON object (TVM 0.27 rejects `"llvm -mcpu=..."` strings), the device kind the
compiled module runs on, and optionally a host target, a cross compiler, a default RPC key and the layout its
convolutions compile in (`conv_layout`, see `tvmnas.measure.layout`; "nchw" when absent, "auto" for the blocked
layout the CPU's vectors suit). The value "host" for `mcpu` / `num-cores` stands for this machine's CPU model / core
count.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field

from tvmnas.errors import TvmnasError
from tvmnas.measure.layout import AUTO, LAYOUTS, check_layout, layout_tag, resolve_layout
from tvmnas.registry import Fields, find_entry, list_entries, read_json_object

TARGET_SCHEMA_VERSION = 1
DEVICES = ("cpu", "cuda")
RUN_DEVICES = ("auto", *DEVICES)  # where a search or training runs (auto: cuda where torch sees a GPU)
_DIR, _ENV = "targets", "TVMNAS_TARGET_PATH"


@dataclass(frozen=True)
class TargetSpec:
    name: str
    description: str
    tvm_target: dict
    device: str
    tvm_host: dict | None = None
    cross_compiler: str | None = None
    rpc_key: str | None = None
    needs: tuple[str, ...] = field(default_factory=tuple)
    conv_layout: str = "nchw"

    def resolved(self) -> dict:
        """The TVM target dict with "host" placeholders replaced by this machine's values."""
        target = dict(self.tvm_target)
        if target.get("mcpu") == "host":
            from tvm.target.codegen import llvm_get_system_cpu

            target["mcpu"] = llvm_get_system_cpu()
        if target.get("num-cores") == "host":
            target["num-cores"] = os.cpu_count() or 1
        if target.get("kind") == "llvm" and "num-cores" not in target:
            target["num-cores"] = os.cpu_count() or 1  # meta-schedule requires it on CPU targets
        return target

    @property
    def layout(self) -> str:
        """The layout its convolutions compile in (`conv_layout` with "auto" resolved for this target)."""
        return resolve_layout(self.conv_layout, self.tvm()) if self.conv_layout == AUTO else self.conv_layout

    @property
    def runtime_threads(self) -> int:
        """CPU threads a module runs with when measured, tuned or deployed: the target's num-cores (0 = TVM's
        default, for GPU targets)."""
        target = self.resolved()
        return int(target["num-cores"]) if target.get("kind") == "llvm" else 0

    def tvm(self):
        """The `tvm.target.Target` to compile for."""
        import tvm

        if self.tvm_host is None:
            return tvm.target.Target(self.resolved())
        return tvm.target.Target(self.resolved(), host=self.tvm_host)

    def fingerprint(self, device_label: str = "local") -> str:
        """Identifies where and how a latency was measured: resolved target, host target, measuring device,
        threads and (where not the imported NCHW) the convolutions' layout."""
        what = [self.resolved(), self.tvm_host, self.device, device_label, self.runtime_threads]
        layout = self.layout
        blob = json.dumps(what + ([layout_tag(layout)] if layout != "nchw" else []),
                          sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def missing_tools(self) -> list[str]:
        return [tool for tool in [self.cross_compiler] if tool and shutil.which(tool) is None]


def target_from_json(data: dict, source: str) -> TargetSpec:
    f = Fields(data, f"target file {source}")
    version = f.get("schema_version", int, f"{TARGET_SCHEMA_VERSION}")
    if version != TARGET_SCHEMA_VERSION:
        raise TvmnasError(f"malformed target file {source}: schema_version {version} is not {TARGET_SCHEMA_VERSION}")
    tvm_target = f.get("tvm_target", dict, "a TVM target object such as {\"kind\": \"llvm\"}")
    if not isinstance(tvm_target.get("kind"), str):
        raise TvmnasError(f"malformed target file {source}: field 'tvm_target.kind' must be a string")
    device = f.get("device", str, f"one of {', '.join(DEVICES)}")
    if device not in DEVICES:
        raise TvmnasError(f"malformed target file {source}: field 'device' must be one of {', '.join(DEVICES)}")
    needs = f.get("needs", list, "a list of strings", [], required=False)
    layout = f.get("conv_layout", str, f"one of {', '.join([*LAYOUTS, AUTO])}", "nchw", required=False)
    try:
        if layout != AUTO:
            check_layout(layout)
    except ValueError as err:
        raise TvmnasError(f"malformed target file {source}: field 'conv_layout': {err}") from None
    return TargetSpec(
        name=f.get("name", str, "a string"),
        description=f.get("description", str, "a string", "", required=False),
        tvm_target=tvm_target,
        device=device,
        tvm_host=f.get("tvm_host", dict, "a TVM target object", None, required=False),
        cross_compiler=f.get("cross_compiler", str, "a compiler command", None, required=False),
        rpc_key=f.get("rpc_key", str, "a string", None, required=False),
        needs=tuple(str(n) for n in needs),
        conv_layout=layout,
    )


def validate(spec: TargetSpec, source: str) -> TargetSpec:
    """The target as TVM sees it: refuse, in one line, what TVM would refuse later (an unknown kind, an unknown
    key, a value of the wrong type) and a CPU target with fewer than one core, before anything is compiled or
    stored."""
    from tvmnas.tvm_compat import check_tvm_version

    check_tvm_version()
    cores = spec.tvm_target.get("num-cores")
    if cores is not None and cores != "host" and (not isinstance(cores, int) or isinstance(cores, bool) or cores < 1):
        raise TvmnasError(f"malformed target file {source}: field 'tvm_target.num-cores' must be an integer >= 1 "
                          f"or \"host\", not {cores!r}")
    try:
        target = spec.tvm()
    except Exception as err:  # noqa: BLE001 - TVM's own words, on one line
        reason = str(err).strip().splitlines()
        raise TvmnasError(f"target file {source}: TVM refuses the target {spec.tvm_target}: "
                          f"{reason[-1] if reason else type(err).__name__}") from None
    mcpu = spec.resolved().get("mcpu")
    if target.kind.name == "llvm" and mcpu:  # LLVM only warns about an unknown CPU, and compiles for a generic one
        from tvm.target.codegen import llvm_get_cpu_archlist

        known = llvm_get_cpu_archlist(target)
        if mcpu not in known:
            raise TvmnasError(f"malformed target file {source}: LLVM knows no CPU {mcpu!r} for this triple "
                              f"(field 'tvm_target.mcpu'; e.g. {', '.join(sorted(known)[:5])}, ...)")
    return spec


def list_targets() -> list[str]:
    return sorted(list_entries(_DIR, _ENV))


def load_target(name: str) -> TargetSpec:
    """A target by registered name or by path to a JSON file."""
    path = find_entry(name, _DIR, _ENV, "target")
    return validate(target_from_json(read_json_object(path, "target"), str(path)), str(path))
