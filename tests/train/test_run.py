"""Training the searched network: the saved file rebuilds it, the test set is scored, supernet weights carry over."""

import json

import pytest
import torch

from tvmnas.arch import Arch
from tvmnas.data.datasets import load_search_data
from tvmnas.errors import TvmnasError
from tvmnas.search.run import CHECKPOINT_FORMAT, CHECKPOINT_VERSION
from tvmnas.search.config import SearchConfig
from tvmnas.search.supernet import Supernet, extract_subnet
from tvmnas.torch_file import save_tagged
from tvmnas.train.config import TrainConfig
from tvmnas.train.network_file import load_network
from tvmnas.search.run import network_from_search
from tvmnas.train.run import train_network


def test_train_saves_a_rebuildable_network(tiny_space, tiny_idx_dir, tmp_path):
    arch = Arch("tiny", ("mb_k3_e2", "zero"))
    cfg = TrainConfig(epochs=2, batch_size=16, data=str(tiny_idx_dir))
    data = load_search_data(cfg.data, 1, 8, cfg.valid_fraction, cfg.seed)
    result = train_network(cfg, tiny_space, arch, data, tmp_path / "train")

    raw = torch.load(tmp_path / "train" / "network.pt", weights_only=True)
    assert raw["arch"] == list(arch.ops) and raw["space"]["name"] == "tiny"
    trained = load_network(tmp_path / "train" / "network.pt")
    assert trained.arch == arch and trained.space == tiny_space
    assert trained.info["test_acc"] == result.test_acc and trained.info["test_images"] == 60
    assert result.test_acc > 0.6  # the class is a bright band: even one epoch learns it
    x = torch.randn(2, 1, 8, 8)
    reloaded = load_network(tmp_path / "train" / "network.pt").net
    assert torch.equal(trained.net(x), reloaded(x))
    log = [json.loads(line) for line in (tmp_path / "train" / "log.jsonl").read_text().splitlines()]
    assert [e["epoch"] for e in log] == [0, 1]
    summary = json.loads((tmp_path / "train" / "summary.json").read_text())
    assert summary["test_acc"] == result.test_acc and summary["init"] == "scratch"


@pytest.mark.parametrize("weights", ["shared", "separate"])
def test_supernet_init_takes_the_chosen_paths(tiny_space, tmp_path, weights):
    torch.manual_seed(3)
    supernet = Supernet(tiny_space, weights)
    cfg = SearchConfig(space="tiny", target="x86-cpu", latency_ms=1.0, supernet=weights)
    save_tagged(tmp_path / "checkpoint.pt", CHECKPOINT_FORMAT, CHECKPOINT_VERSION,
                {"config": cfg.to_json(), "supernet": supernet.state_dict()})
    arch = Arch("tiny", ("mb_k3_e1", "mb_k3_e2"))
    net = network_from_search(tmp_path / "checkpoint.pt", tiny_space, arch).eval()
    want = extract_subnet(supernet, arch).eval()
    x = torch.randn(2, 1, 8, 8)
    assert torch.equal(net(x), want(x))


def test_network_file_refuses_other_files(tmp_path):
    torch.save({"format": "something-else"}, tmp_path / "other.pt")
    with pytest.raises(TvmnasError, match="is not a tvmnas network file"):
        load_network(tmp_path / "other.pt")
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(TvmnasError, match="cannot read network file"):
        load_network(tmp_path / "junk.pt")


def test_trainings_saved_before_shards_resume_as_one_shard(tiny_space, tiny_idx_dir, tmp_path):
    from tvmnas.train.run import TRAIN_CHECKPOINT_FORMAT, TRAIN_CHECKPOINT_VERSION
    from tvmnas.torch_file import load_tagged

    arch = Arch("tiny", ("mb_k3_e2", "zero"))
    cfg = TrainConfig(epochs=2, batch_size=16, data=str(tiny_idx_dir))
    data = load_search_data(cfg.data, 1, 8, cfg.valid_fraction, cfg.seed)
    out = tmp_path / "train"
    train_network(TrainConfig(epochs=1, batch_size=16, data=str(tiny_idx_dir)), tiny_space, arch, data, out)
    path = out / "checkpoint.pt"
    ckpt = load_tagged(path, TRAIN_CHECKPOINT_FORMAT, TRAIN_CHECKPOINT_VERSION, "training checkpoint")
    old = {k: v for k, v in ckpt["config"].items() if k != "shards"}  # as trainings saved before the setting
    save_tagged(path, TRAIN_CHECKPOINT_FORMAT, TRAIN_CHECKPOINT_VERSION, {**ckpt, "config": {**old, "epochs": 2}})
    resumed = TrainConfig.from_json({**old, "epochs": 2}, "settings.json")
    assert resumed == cfg and resumed.shards == 1
    assert len(train_network(resumed, tiny_space, arch, data, out, resume=True).log) == 2
    with pytest.raises(TvmnasError, match="settings.json: .*unexpected keyword"):
        TrainConfig.from_json({**old, "colour": "blue"}, "settings.json")
