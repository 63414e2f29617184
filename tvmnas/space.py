"""Search spaces: the ProxylessNAS MBConv family over a fixed stem, first block and head.

A space file (`search/<name>.json`) gives the input, the stem, the first block, the candidate kernels and expand
ratios, the stages (channels, layers, stride of the first layer) and the head. From it follow the searchable
layers, each with its choices, and the unique candidates that need a latency measurement.
"""

from __future__ import annotations

from dataclasses import dataclass

from tvmnas.arch import Arch, parse_op
from tvmnas.errors import TvmnasError
from tvmnas.registry import Fields, find_entry, list_entries, read_json_object

SPACE_SCHEMA_VERSION = 1
_DIR, _ENV = "spaces", "TVMNAS_SPACE_PATH"


@dataclass(frozen=True)
class Stage:
    """A run of searchable layers with the same output channels; the first has the stage's stride."""

    channels: int
    layers: int
    stride: int


@dataclass(frozen=True)
class Candidate:
    """One thing to measure: an operation applied to one input shape.

    `part` is "stem", "first", "layer" or "head"; `op` is a block op string (`mb_k5_e6`), `stem_k3`,
    or `head_c1280` (1x1 conv to 1280 channels, global pooling, classifier to out_channels).
    """

    part: str
    op: str
    in_channels: int
    out_channels: int
    stride: int
    in_size: int

    @property
    def key(self) -> str:
        return f"{self.op}_i{self.in_channels}_o{self.out_channels}_s{self.stride}"

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        return (1, self.in_channels, self.in_size, self.in_size)

    @property
    def shape_text(self) -> str:
        return "x".join(str(d) for d in self.input_shape)

    @property
    def ident(self) -> str:
        """The candidate's name, unique in a space: its key and input shape (a dict key, a file name)."""
        return f"{self.key}_{self.shape_text}"

    @property
    def weight_count(self) -> int:
        """Weight values of its convolutions and classifier (biases left out; see `Composition`)."""
        if self.part == "stem":
            return self.in_channels * self.out_channels * int(self.op.removeprefix("stem_k")) ** 2
        if self.part == "head":
            hidden = int(self.op.removeprefix("head_c"))
            return self.in_channels * hidden + hidden * self.out_channels
        return int(_mbconv_size(self.in_channels, self.out_channels, parse_op(self.op), self.in_size)[0])

    @property
    def weight_mb(self) -> float:
        """Its weights' megabytes as deployed (float32)."""
        return self.weight_count * 4 / 1e6

    @property
    def stage_label(self) -> str:
        """Where it sits: input size, channels in -> out, stride (used to group benchmark tables)."""
        return f"{self.in_size}x{self.in_size} {self.in_channels}->{self.out_channels} s{self.stride}"


@dataclass(frozen=True)
class Layer:
    """A searchable layer: its shapes and the op strings it may take (`zero` only where shapes allow)."""

    index: int
    in_channels: int
    out_channels: int
    stride: int
    in_size: int
    choices: tuple[str, ...]

    def candidate(self, op: str) -> Candidate:
        return Candidate("layer", op, self.in_channels, self.out_channels, self.stride, self.in_size)


def conv_out_size(size: int, stride: int) -> int:
    """Output size of a 'same'-padded conv with odd kernel: ceil(size / stride)."""
    return (size + stride - 1) // stride


@dataclass(frozen=True)
class SearchSpace:
    name: str
    description: str
    input_channels: int
    input_size: int
    num_classes: int
    stem_channels: int
    stem_kernel: int
    stem_stride: int
    first_op: str
    first_channels: int
    kernels: tuple[int, ...]
    expands: tuple[int, ...]
    allow_zero: bool
    stages: tuple[Stage, ...]
    head_channels: int

    @property
    def block_ops(self) -> tuple[str, ...]:
        return tuple(f"mb_k{k}_e{e}" for k in self.kernels for e in self.expands)

    @property
    def mobilenetv2_ops(self) -> tuple[str, ...]:
        """The space's MobileNetV2-style network: every layer the smallest kernel at the largest expansion
        (`mb_k3_e6` in the presets): the hand-designed baseline, and the network-sized reference of the
        measurements (`tvmnas.reference_network`)."""
        return tuple(f"mb_k{min(self.kernels)}_e{max(self.expands)}" for _ in self.layers())

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        """A network's input: one image, NCHW (the stem's input)."""
        return self.stem().input_shape

    def stem(self) -> Candidate:
        return Candidate("stem", f"stem_k{self.stem_kernel}", self.input_channels, self.stem_channels,
                         self.stem_stride, self.input_size)

    def first(self) -> Candidate:
        size = conv_out_size(self.input_size, self.stem_stride)
        return Candidate("first", self.first_op, self.stem_channels, self.first_channels, 1, size)

    def layers(self) -> list[Layer]:
        result: list[Layer] = []
        channels, size = self.first_channels, conv_out_size(self.input_size, self.stem_stride)
        for stage in self.stages:
            for i in range(stage.layers):
                stride = stage.stride if i == 0 else 1
                can_skip = self.allow_zero and stride == 1 and channels == stage.channels
                choices = self.block_ops + (("zero",) if can_skip else ())
                result.append(Layer(len(result), channels, stage.channels, stride, size, choices))
                channels, size = stage.channels, conv_out_size(size, stride)
        return result

    def head(self) -> Candidate:
        layers = self.layers()
        last = layers[-1] if layers else None
        channels = last.out_channels if last else self.first_channels
        size = conv_out_size(last.in_size, last.stride) if last else self.first().in_size
        return Candidate("head", f"head_c{self.head_channels}", channels, self.num_classes, 1, size)

    def fixed_candidates(self) -> list[Candidate]:
        return [self.stem(), self.first(), self.head()]

    def blocks(self, ops: tuple[str, ...]) -> list[Candidate]:
        """What a network of these ops runs, block by block: the fixed parts and every chosen op but `zero`."""
        return self.fixed_candidates() + [layer.candidate(op) for layer, op in zip(self.layers(), ops)
                                          if op != "zero"]

    def candidates(self) -> list[Candidate]:
        """Every unique candidate to measure: the fixed parts, then each (op, shape) of the searchable layers."""
        unique: dict[str, Candidate] = {}
        for cand in self.fixed_candidates():
            unique.setdefault(cand.ident, cand)
        for layer in self.layers():
            for op in layer.choices:
                if op != "zero":
                    cand = layer.candidate(op)
                    unique.setdefault(cand.ident, cand)
        return list(unique.values())

    def size(self) -> SpaceSize:
        """Estimated sizes, to refuse a space that would not fit this machine before anything runs."""
        stem, first, head = self.stem(), self.first(), self.head()
        fixed = [(stem.in_channels * stem.out_channels * self.stem_kernel ** 2,
                  stem.out_channels * conv_out_size(stem.in_size, stem.stride) ** 2, "stem.channels"),
                 (*_mbconv_size(first.in_channels, first.out_channels, parse_op(first.op), first.in_size),
                  "first_block.channels"),
                 (head.in_channels * self.head_channels + self.head_channels * self.num_classes,
                  self.head_channels * head.in_size ** 2, "head.channels")]
        stage_of = [i for i, stage in enumerate(self.stages) for _ in range(stage.layers)]
        per_candidate = list(fixed)
        supernet_params, step_activations = sum(f[0] for f in fixed), sum(f[1] for f in fixed)
        for layer, stage in zip(self.layers(), stage_of):
            sizes = [_mbconv_size(layer.in_channels, layer.out_channels, parse_op(op), layer.in_size)
                     for op in layer.choices if op != "zero"]
            supernet_params += sum(p for p, _ in sizes)
            step_activations += max(a for _, a in sizes)
            per_candidate += [(p, a, f"stages[{stage}].channels") for p, a in sizes]
        biggest = max(per_candidate, key=lambda c: c[0] + c[1])
        return SpaceSize(supernet_params, step_activations, biggest[0], biggest[1], biggest[2])

    def check_size(self, batch_size: int = 1, memory_bytes: int | None = None) -> None:
        """Refuse, in one line naming the number and the field or flag, a space too big to handle here: the
        supernet's parameters, one candidate's weights and activations (what compiling it holds), and the
        activations of a training step at `batch_size` (per process), within MAX_STEP_BYTES or, on a GPU, 80% of
        its `memory_bytes`."""
        size = self.size()
        where = f"space {self.name!r}"
        if size.supernet_params > MAX_SUPERNET_PARAMS:
            raise TvmnasError(f"{where}: its supernet would hold {size.supernet_params:.3g} parameters, over the "
                              f"bound of {MAX_SUPERNET_PARAMS:.3g} (largest part: {size.largest_field})")
        if max(size.candidate_params, size.candidate_activations) > MAX_CANDIDATE_VALUES:
            raise TvmnasError(f"{where}: one candidate would hold {size.candidate_params:.3g} weights and "
                              f"{size.candidate_activations:.3g} activation values, over the bound of "
                              f"{MAX_CANDIDATE_VALUES:.3g} ({size.largest_field})")
        step_bytes = size.step_activations * batch_size * 4 * ACTIVATIONS_KEPT
        bound = MAX_STEP_BYTES if memory_bytes is None else 0.8 * memory_bytes
        if step_bytes > bound:
            raise TvmnasError(f"{where}: a training step at a batch of {batch_size} per process would hold about "
                              f"{step_bytes / 2**30:.1f} GiB of activations, over the bound of "
                              f"{bound / 2**30:.0f} GiB (lower --batch-size, or the space's input size)")

    def check_arch(self, arch: Arch) -> None:
        """Raise a TvmnasError naming the first layer whose op the space does not allow."""
        if arch.space != self.name:
            raise TvmnasError(f"architecture is for space {arch.space!r}, not {self.name!r}")
        layers = self.layers()
        if len(arch.ops) != len(layers):
            raise TvmnasError(f"architecture has {len(arch.ops)} layers; space {self.name!r} has {len(layers)}")
        for layer, op in zip(layers, arch.ops):
            if op not in layer.choices:
                raise TvmnasError(f"layer {layer.index}: {op!r} is not one of {', '.join(layer.choices)}")


# Bounds that keep a typo in a space file from taking the machine down (24 GiB here): the supernet's weights with
# their gradients and optimizer state, a candidate that TVM compiles with its weights as constants, a step's
# activations kept for the backward pass (expand, depthwise and project outputs of every layer).
MAX_SUPERNET_PARAMS = 2e8
MAX_CANDIDATE_VALUES = 6.4e7
MAX_STEP_BYTES = 12 * 2**30
ACTIVATIONS_KEPT = 3


@dataclass(frozen=True)
class SpaceSize:
    supernet_params: float
    step_activations: float  # values per image of the largest path, all layers
    candidate_params: float  # of the largest candidate
    candidate_activations: float  # its largest activation, per image
    largest_field: str  # the space-file field behind the largest candidate


def _mbconv_size(in_ch: int, out_ch: int, block, in_size: int) -> tuple[float, float]:
    """(weights, largest activation per image) of an MBConv block."""
    hidden = in_ch * block.expand
    params = (in_ch * hidden if block.expand != 1 else 0) + hidden * block.kernel ** 2 + hidden * out_ch
    return float(params), float(hidden * in_size * in_size)


def space_from_json(data: dict, source: str) -> SearchSpace:
    f = Fields(data, f"space file {source}")
    version = f.get("schema_version", int, f"{SPACE_SCHEMA_VERSION}")
    if version != SPACE_SCHEMA_VERSION:
        raise TvmnasError(f"malformed space file {source}: schema_version {version} is not {SPACE_SCHEMA_VERSION}")
    inp, stem, first, cands, head = (f.sub(k) for k in ("input", "stem", "first_block", "candidates", "head"))
    stages = []
    for i, raw in enumerate(f.get("stages", list, "a non-empty list of objects")):
        if not isinstance(raw, dict):
            raise TvmnasError(f"malformed space file {source}: field 'stages[{i}]' must be an object")
        s = Fields(raw, f"space file {source}", f"stages[{i}].")
        stages.append(Stage(s.positive_int("channels"), s.positive_int("layers"), s.positive_int("stride")))
    if not stages:
        raise TvmnasError(f"malformed space file {source}: field 'stages' must be a non-empty list of objects")
    kernels = cands.int_list("kernels")
    if any(k % 2 == 0 for k in kernels):
        raise TvmnasError(f"malformed space file {source}: field 'candidates.kernels' must hold odd sizes")
    first_op = first.get("op", str, "a block op string such as 'mb_k3_e1'")
    try:
        if parse_op(first_op).is_zero:
            raise TvmnasError("zero")
    except TvmnasError:
        raise TvmnasError(f"malformed space file {source}: field 'first_block.op' must be 'mb_k<k>_e<e>'") from None
    return SearchSpace(
        name=f.get("name", str, "a string"),
        description=f.get("description", str, "a string", "", required=False),
        input_channels=inp.positive_int("channels"),
        input_size=inp.positive_int("size"),
        num_classes=f.positive_int("num_classes"),
        stem_channels=stem.positive_int("channels"),
        stem_kernel=stem.positive_int("kernel"),
        stem_stride=stem.positive_int("stride"),
        first_op=first_op,
        first_channels=first.positive_int("channels"),
        kernels=tuple(kernels),
        expands=tuple(cands.int_list("expands")),
        allow_zero=cands.get("zero", bool, "true or false", True, required=False),
        stages=tuple(stages),
        head_channels=head.positive_int("channels"),
    )


def space_to_json(space: SearchSpace) -> dict:
    """The space file of a space (`space_from_json` reads it back to an equal space)."""
    return {"schema_version": SPACE_SCHEMA_VERSION, "name": space.name, "description": space.description,
            "input": {"channels": space.input_channels, "size": space.input_size},
            "num_classes": space.num_classes,
            "stem": {"channels": space.stem_channels, "kernel": space.stem_kernel, "stride": space.stem_stride},
            "first_block": {"op": space.first_op, "channels": space.first_channels},
            "candidates": {"kernels": list(space.kernels), "expands": list(space.expands), "zero": space.allow_zero},
            "stages": [{"channels": s.channels, "layers": s.layers, "stride": s.stride} for s in space.stages],
            "head": {"channels": space.head_channels}}


def list_spaces() -> list[str]:
    return sorted(list_entries(_DIR, _ENV))


def load_space(name: str) -> SearchSpace:
    """A space by registered name or by path to a JSON file; refused when too big for this machine (see
    `SearchSpace.check_size`)."""
    path = find_entry(name, _DIR, _ENV, "search space")
    space = space_from_json(read_json_object(path, "space"), str(path))
    space.check_size()
    return space
