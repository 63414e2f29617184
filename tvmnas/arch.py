"""Block operations and architectures as short strings (`mb_k5_e6`, `zero`), decoded losslessly."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from tvmnas.errors import TvmnasError
from tvmnas.registry import read_json_object

ARCH_SCHEMA_VERSION = 1
_MB_PATTERN = re.compile(r"^mb_k([1-9][0-9]*)_e([1-9][0-9]*)$")


@dataclass(frozen=True)
class BlockOp:
    """One candidate operation of a layer: an MBConv (kernel, expand ratio) or `zero` (skip)."""

    kind: str  # "mb" or "zero"
    kernel: int = 0
    expand: int = 0

    def __str__(self) -> str:
        return "zero" if self.kind == "zero" else f"mb_k{self.kernel}_e{self.expand}"

    @property
    def is_zero(self) -> bool:
        return self.kind == "zero"


def parse_op(text: str) -> BlockOp:
    """Decode `mb_k5_e6` or `zero`; `str(parse_op(s)) == s` for every valid s."""
    if text == "zero":
        return BlockOp("zero")
    match = _MB_PATTERN.match(text)
    if not match:
        raise TvmnasError(f"unknown block op {text!r}: expected 'zero' or 'mb_k<kernel>_e<expand>'")
    kernel, expand = int(match.group(1)), int(match.group(2))
    if kernel % 2 == 0:
        raise TvmnasError(f"block op {text!r}: the kernel size must be odd")
    return BlockOp("mb", kernel, expand)


@dataclass(frozen=True)
class Arch:
    """A searched network: the space it belongs to and one op string per searchable layer."""

    space: str
    ops: tuple[str, ...]

    def __post_init__(self) -> None:
        for op in self.ops:
            parse_op(op)

    def to_json(self) -> dict:
        return {"schema_version": ARCH_SCHEMA_VERSION, "space": self.space, "ops": list(self.ops)}

    @classmethod
    def from_json(cls, data: dict, source: str = "arch") -> Arch:
        if not isinstance(data, dict):
            raise TvmnasError(f"{source}: expected a JSON object")
        version = data.get("schema_version")
        if version != ARCH_SCHEMA_VERSION:
            raise TvmnasError(f"{source}: schema_version {version!r} is not {ARCH_SCHEMA_VERSION}")
        space, ops = data.get("space"), data.get("ops")
        if not isinstance(space, str) or not isinstance(ops, list) or not all(isinstance(o, str) for o in ops):
            raise TvmnasError(f"{source}: needs 'space' (a string) and 'ops' (a list of strings)")
        return cls(space, tuple(ops))


def save_arch(arch: Arch, path: Path) -> None:
    Path(path).write_text(json.dumps(arch.to_json(), indent=2) + "\n")


def load_arch(path: Path) -> Arch:
    return Arch.from_json(read_json_object(path, "architecture"), source=str(path))
