"""The trained-network file: weights plus everything that rebuilds the network (space, architecture, settings).

It loads with `torch.load(path, weights_only=True)`: only tensors, numbers, strings, lists and dicts.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from tvmnas.arch import Arch
from tvmnas.errors import TvmnasError
from tvmnas.model.network import Network
from tvmnas.space import SearchSpace, space_from_json, space_to_json

NETWORK_FORMAT = "tvmnas-network"
NETWORK_VERSION = 1


@dataclass(frozen=True)
class TrainedNetwork:
    space: SearchSpace
    arch: Arch
    net: Network  # in eval mode
    info: dict  # accuracy, classes, training settings, ...


def save_network(path: Path, space: SearchSpace, arch: Arch, net: Network, info: dict) -> None:
    """Written to a temporary file and renamed, so a kill never leaves a half-written file."""
    path = Path(path)
    tmp = path.with_suffix(".tmp")
    torch.save({"format": NETWORK_FORMAT, "version": NETWORK_VERSION, "space": space_to_json(space),
                "arch": list(arch.ops), "state_dict": net.state_dict(), "info": info}, tmp)
    os.replace(tmp, path)


def load_network(path: Path) -> TrainedNetwork:
    try:
        data = torch.load(path, weights_only=True)
    except FileNotFoundError:
        raise TvmnasError(f"no network file at {path}") from None
    except Exception as err:
        raise TvmnasError(f"cannot read network file {path}: {str(err).splitlines()[0]}") from None
    if not isinstance(data, dict) or data.get("format") != NETWORK_FORMAT:
        raise TvmnasError(f"{path} is not a tvmnas network file")
    if data.get("version") != NETWORK_VERSION:
        raise TvmnasError(f"{path}: network file version {data.get('version')} is not {NETWORK_VERSION}")
    space = space_from_json(data["space"], str(path))
    arch = Arch(space.name, tuple(data["arch"]))
    net = Network(space, arch)
    try:
        net.load_state_dict(data["state_dict"])
    except RuntimeError as err:
        raise TvmnasError(f"{path}: weights do not fit the architecture: {str(err).splitlines()[0]}") from None
    return TrainedNetwork(space, arch, net.eval(), data["info"])
