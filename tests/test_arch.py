import pytest

from tvmnas.arch import Arch, load_arch, parse_op, save_arch
from tvmnas.errors import TvmnasError


@pytest.mark.parametrize("text", ["zero", "mb_k3_e1", "mb_k5_e6", "mb_k7_e3", "mb_k11_e12"])
def test_op_round_trip(text):
    assert str(parse_op(text)) == text


def test_op_fields():
    op = parse_op("mb_k5_e6")
    assert (op.kind, op.kernel, op.expand, op.is_zero) == ("mb", 5, 6, False)
    assert parse_op("zero").is_zero


@pytest.mark.parametrize("text", ["", "mb_k4_e6", "mb_k5", "mb_k05_e6", "mb_k5_e0", "MB_K5_E6", "skip", "mb_k5_e6 "])
def test_bad_ops_rejected(text):
    with pytest.raises(TvmnasError):
        parse_op(text)


def test_arch_file_round_trip(tmp_path):
    arch = Arch("fashion-mnist", ("mb_k3_e3", "zero", "mb_k7_e6"))
    save_arch(arch, tmp_path / "arch.json")
    assert load_arch(tmp_path / "arch.json") == arch
    assert Arch.from_json(arch.to_json()) == arch


def test_arch_file_errors(write_json):
    with pytest.raises(TvmnasError, match="schema_version"):
        load_arch(write_json("a.json", {"schema_version": 99, "space": "s", "ops": []}))
    with pytest.raises(TvmnasError, match="malformed architecture file .*b.json: Expecting property name"):
        load_arch(write_json("b.json", "{not json"))
    with pytest.raises(TvmnasError, match="block op .mb_k2_e1."):
        load_arch(write_json("c.json", {"schema_version": 1, "space": "s", "ops": ["mb_k2_e1"]}))
