import itertools

import pytest

from tvmnas.arch import Arch
from tvmnas.errors import TvmnasError
from tvmnas.space import list_spaces, load_space, space_from_json, space_to_json

BLOCK_OPS = {f"mb_k{k}_e{e}" for k in (3, 5, 7) for e in (3, 6)}


def test_registered_spaces():
    assert {"proxyless-imagenet", "fashion-mnist"} <= set(list_spaces())


def test_proxyless_imagenet_layout():
    space = load_space("proxyless-imagenet")
    layers = space.layers()
    assert len(layers) == 21
    assert [layers[i].out_channels for i in (0, 4, 8, 12, 16, 20)] == [24, 40, 80, 96, 192, 320]
    assert layers[0].in_size == 112 and space.head().in_size == 7 and space.head().out_channels == 1000
    for layer in layers:
        skip_ok = layer.stride == 1 and layer.in_channels == layer.out_channels
        assert set(layer.choices) == BLOCK_OPS | ({"zero"} if skip_ok else set())


def test_mobilenetv2_style_network_of_each_space(tiny_space):
    for name in list_spaces():
        space = load_space(name)
        assert space.mobilenetv2_ops == ("mb_k3_e6",) * len(space.layers())
    assert tiny_space.mobilenetv2_ops == ("mb_k3_e2", "mb_k3_e2")
    tiny_space.check_arch(Arch("tiny", tiny_space.mobilenetv2_ops))


def test_candidates_are_unique_and_cover_every_layer():
    space = load_space("fashion-mnist")
    cands = space.candidates()
    keys = [(c.key, c.shape_text) for c in cands]
    assert len(keys) == len(set(keys))
    # stem, first block, head + 6 ops for each distinct layer shape (4 in this space)
    distinct_shapes = {(l.in_channels, l.out_channels, l.stride, l.in_size) for l in space.layers()}
    assert len(distinct_shapes) == 4 and len(cands) == 3 + 6 * 4
    for layer in space.layers():
        for op in set(layer.choices) - {"zero"}:
            cand = layer.candidate(op)
            assert (cand.key, cand.shape_text) in keys


def test_every_arch_of_tiny_space_enumerates(tiny_space):
    layers = tiny_space.layers()
    archs = list(itertools.product(*(l.choices for l in layers)))
    assert len(archs) == 2 * 3  # first layer: 2 ops; second: 2 ops + zero
    for ops in archs:
        tiny_space.check_arch(Arch("tiny", ops))


def test_check_arch_errors(tiny_space):
    with pytest.raises(TvmnasError, match="not one of"):
        tiny_space.check_arch(Arch("tiny", ("zero", "mb_k3_e1")))  # stride-2 layer cannot be skipped
    with pytest.raises(TvmnasError, match="has 1 layers"):
        tiny_space.check_arch(Arch("tiny", ("mb_k3_e1",)))
    with pytest.raises(TvmnasError, match="for space 'other'"):
        tiny_space.check_arch(Arch("other", ("mb_k3_e1", "zero")))


def test_unknown_space_lists_known():
    with pytest.raises(TvmnasError, match="known: .*fashion-mnist"):
        load_space("no-such-space")


@pytest.mark.parametrize("patch, field", [
    ({"stages": [{"channels": 8, "layers": 0, "stride": 2}]}, "stages[0].layers"),
    ({"candidates": {"kernels": [4], "expands": [1]}}, "candidates.kernels"),
    ({"input": {"channels": 1}}, "input.size"),
    ({"num_classes": "ten"}, "num_classes"),
    ({"first_block": {"op": "zero", "channels": 4}}, "first_block.op"),
])
def test_malformed_space_names_file_and_field(tiny_space_path, write_json, patch, field):
    import json

    data = {**json.loads(tiny_space_path.read_text()), **patch}
    path = write_json("bad-space.json", data)
    with pytest.raises(TvmnasError) as err:
        load_space(str(path))
    assert str(path) in str(err.value) and field in str(err.value)


@pytest.mark.parametrize("name", ["fashion-mnist", "cluttered-fashion-64", "proxyless-imagenet"])
def test_space_json_round_trip(name):
    space = load_space(name)
    assert space_from_json(space_to_json(space), "round trip") == space
