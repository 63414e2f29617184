import os
from dataclasses import replace

import pytest

from tvmnas.errors import TvmnasError
from tvmnas.measure.layout import LAYOUTS
from tvmnas.targets import list_targets, load_target


def test_registered_targets():
    assert {"x86-cpu", "arm-aarch64", "cuda-sm90"} <= set(list_targets())


def test_host_values_resolve():
    spec = load_target("x86-cpu")
    resolved = spec.resolved()
    assert resolved["num-cores"] == os.cpu_count()
    assert resolved["mcpu"] not in ("host", "")
    assert spec.tvm().kind.name == "llvm"


def test_arm_and_cuda_targets():
    arm = load_target("arm-aarch64")
    assert arm.cross_compiler == "aarch64-linux-gnu-g++" and arm.rpc_key
    assert "aarch64" in str(arm.tvm())
    cuda = load_target("cuda-sm90")
    assert cuda.device == "cuda" and cuda.tvm().kind.name == "cuda"


def test_fingerprint_separates_devices_and_targets():
    x86 = load_target("x86-cpu")
    assert x86.fingerprint("local") == load_target("x86-cpu").fingerprint("local")  # stable across loads
    assert x86.fingerprint("local") != x86.fingerprint("rpc:127.0.0.1:9090")
    assert x86.fingerprint() != load_target("arm-aarch64").fingerprint()
    # a latency measured with the convolutions in one layout is not one of another layout
    assert len({replace(x86, conv_layout=layout).fingerprint() for layout in LAYOUTS}) == len(LAYOUTS)


def test_user_adds_target_by_adding_a_file(tmp_path, monkeypatch, write_json):
    write_json("my-board.json", {"schema_version": 1, "name": "my-board", "device": "cpu",
                                 "tvm_target": {"kind": "llvm", "num-cores": 1}})
    monkeypatch.setenv("TVMNAS_TARGET_PATH", str(tmp_path))
    assert "my-board" in list_targets()
    assert load_target("my-board").resolved() == {"kind": "llvm", "num-cores": 1}


def test_unknown_target_lists_known():
    with pytest.raises(TvmnasError, match="known: .*x86-cpu"):
        load_target("nope")


@pytest.mark.parametrize("data, field", [
    ({"schema_version": 1, "name": "t", "device": "cpu"}, "tvm_target"),
    ({"schema_version": 1, "name": "t", "device": "tpu", "tvm_target": {"kind": "llvm"}}, "device"),
    ({"schema_version": 1, "name": "t", "device": "cpu", "tvm_target": {}}, "tvm_target.kind"),
    ({"schema_version": 1, "device": "cpu", "tvm_target": {"kind": "llvm"}}, "name"),
    ({"schema_version": 1, "name": "t", "device": "cpu", "tvm_target": {"kind": "llvm"}, "conv_layout": "nc"},
     "conv_layout"),
])
def test_malformed_target_names_file_and_field(write_json, data, field):
    path = write_json("bad-target.json", data)
    with pytest.raises(TvmnasError) as err:
        load_target(str(path))
    assert str(path) in str(err.value) and f"'{field}'" in str(err.value)


def test_target_file_that_is_not_json(write_json):
    path = write_json("broken.json", "{\"name\": ")
    with pytest.raises(TvmnasError, match="malformed target file .*broken.json"):
        load_target(str(path))
