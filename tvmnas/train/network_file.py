"""The trained-network file: weights plus everything that rebuilds the network (space, architecture, settings).

It loads with `torch.load(path, weights_only=True)`: only tensors, numbers, strings, lists and dicts.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tvmnas.arch import Arch
from tvmnas.errors import TvmnasError
from tvmnas.model.network import Network
from tvmnas.space import SearchSpace, space_from_json, space_to_json
from tvmnas.torch_file import load_tagged, save_tagged

NETWORK_FORMAT = "tvmnas-network"
NETWORK_VERSION = 1


@dataclass(frozen=True)
class TrainedNetwork:
    space: SearchSpace
    arch: Arch
    net: Network  # in eval mode
    info: dict  # accuracy, classes, training settings, ...


def save_network(path: Path, space: SearchSpace, arch: Arch, net: Network, info: dict) -> None:
    save_tagged(path, NETWORK_FORMAT, NETWORK_VERSION, {"space": space_to_json(space), "arch": list(arch.ops),
                                                        "state_dict": {k: v.detach().cpu() for k, v in net.state_dict().items()},
                                                        "info": info})


def load_network(path: Path) -> TrainedNetwork:
    data = load_tagged(path, NETWORK_FORMAT, NETWORK_VERSION, "network file")
    space = space_from_json(data["space"], str(path))
    arch = Arch(space.name, tuple(data["arch"]))
    net = Network(space, arch)
    try:
        net.load_state_dict(data["state_dict"])
    except RuntimeError as err:
        raise TvmnasError(f"{path}: weights do not fit the architecture: {str(err).splitlines()[0]}") from None
    return TrainedNetwork(space, arch, net.eval(), data["info"])
