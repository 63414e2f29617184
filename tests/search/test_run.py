import json

import numpy as np
import pytest
import torch

from tvmnas.arch import load_arch
from tvmnas.data.datasets import load_search_data
from tvmnas.errors import TvmnasError
from tvmnas.search.config import EARLIER_DEFAULTS, WEIGHT_PATHS, SearchConfig
from tvmnas.search.latency import LatencyTable
from tvmnas.search.run import run_search

TABLE = LatencyTable(fixed_ms=0.5, layer_ms=((1.0, 2.0), (0.3, 0.6, 0.0)))


def config(tiny_space_path, tiny_idx_dir, **changes) -> SearchConfig:
    base = dict(space=str(tiny_space_path), target="x86-cpu", latency_ms=1.8, epochs=3, warmup_epochs=1,
                batch_size=16, arch_every=2, valid_fraction=0.25, data=str(tiny_idx_dir))
    return SearchConfig(**{**base, **changes})


def data_for(cfg, space):
    return load_search_data(cfg.data, space.input_channels, space.input_size, cfg.valid_fraction, cfg.seed, cfg.limit)


def test_tiny_search_end_to_end(tiny_space, tiny_space_path, tiny_idx_dir, tmp_path):
    cfg = config(tiny_space_path, tiny_idx_dir)
    data = data_for(cfg, tiny_space)
    assert (len(data.train), len(data.valid), len(data.test)) == (180, 60, 60)
    result = run_search(cfg, tiny_space, TABLE, data, tmp_path / "run")
    run = tmp_path / "run"
    for name in ("config.json", "checkpoint.pt", "log.jsonl", "arch.json", "probabilities.json", "summary.json"):
        assert (run / name).exists(), name
    log = [json.loads(l) for l in (run / "log.jsonl").read_text().splitlines()]
    assert [e["epoch"] for e in log] == [0, 1, 2]
    assert log[0]["arch_steps"] == 0 and log[1]["arch_steps"] > 0  # alpha frozen during warm-up
    for key in ("train_loss", "train_acc", "valid_loss", "valid_acc", "expected_latency_ms", "alpha_entropy",
                "seconds"):
        assert key in log[-1]
    arch = load_arch(run / "arch.json")
    tiny_space.check_arch(arch)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["arch"] == list(arch.ops) == list(result.arch_ops)
    assert summary["predicted_latency_ms"] == pytest.approx(
        TABLE.arch_ms([l.choices.index(o) for l, o in zip(tiny_space.layers(), arch.ops)]))
    assert json.loads((run / "config.json").read_text()) == cfg.to_json()
    probs = json.loads((run / "probabilities.json").read_text())
    assert all(sum(p.values()) == pytest.approx(1.0) for p in probs)


def test_resume_after_kill_equals_uninterrupted(tiny_space, tiny_space_path, tiny_idx_dir, tmp_path):
    cfg = config(tiny_space_path, tiny_idx_dir)
    data = data_for(cfg, tiny_space)
    run_search(cfg, tiny_space, TABLE, data, tmp_path / "whole")
    run_search(cfg, tiny_space, TABLE, data, tmp_path / "cut", stop_after_epochs=2)  # "killed" after epoch 2
    with (tmp_path / "cut" / "log.jsonl").open("a") as handle:  # and a half-written epoch 3 line
        handle.write(json.dumps({"epoch": 2, "partial": True}) + "\n")
    assert not (tmp_path / "cut" / "arch.json").exists()
    run_search(cfg, tiny_space, TABLE, data, tmp_path / "cut", resume=True)
    whole = torch.load(tmp_path / "whole" / "checkpoint.pt", weights_only=True)
    cut = torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=True)
    assert whole["epochs_done"] == cut["epochs_done"] == 3
    for key, value in whole["supernet"].items():
        assert torch.equal(value, cut["supernet"][key]), key
    assert (tmp_path / "whole" / "arch.json").read_text() == (tmp_path / "cut" / "arch.json").read_text()
    strip = lambda p: [{k: v for k, v in json.loads(l).items() if k != "seconds"} for l in p.read_text().splitlines()]
    assert strip(tmp_path / "whole" / "log.jsonl") == strip(tmp_path / "cut" / "log.jsonl")


def test_incompatible_checkpoint_on_resume(tiny_space, tiny_space_path, tiny_idx_dir, tmp_path):
    cfg = config(tiny_space_path, tiny_idx_dir, epochs=1, warmup_epochs=0)
    data = data_for(cfg, tiny_space)
    run_search(cfg, tiny_space, TABLE, data, tmp_path / "run")
    with pytest.raises(TvmnasError, match="latency_ms differ"):
        run_search(config(tiny_space_path, tiny_idx_dir, epochs=1, warmup_epochs=0, latency_ms=2.5),
                   tiny_space, TABLE, data, tmp_path / "run", resume=True)
    (tmp_path / "run" / "checkpoint.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(TvmnasError, match="cannot read search checkpoint"):
        run_search(cfg, tiny_space, TABLE, data, tmp_path / "run", resume=True)
    with pytest.raises(TvmnasError, match="already holds a search"):
        run_search(cfg, tiny_space, TABLE, data, tmp_path / "run")


@pytest.mark.parametrize("changes, message", [
    ({"latency_ms": 0}, "must be > 0"), ({"latency_ms": -1.0}, "must be > 0"),
    ({"loss": "mul#lin"}, "unknown latency loss"), ({"warmup_epochs": 5}, "warmup"),
    ({"supernet": "tied"}, "unknown supernet weights"), ({"weight_paths": "greedy"}, "unknown weight-step paths"),
    ({"arch_lr_schedule": "linear"}, "unknown architecture learning-rate schedule"),
    ({"rerank": -1}, "rerank >= 0"), ({"rerank_epochs": 0}, "rerank_epochs >= 1"),
])
def test_bad_settings(tiny_space_path, tiny_idx_dir, changes, message):
    with pytest.raises(TvmnasError, match=message):
        config(tiny_space_path, tiny_idx_dir, **changes)


def test_runs_saved_before_shared_weights_resume_with_separate_ones(tiny_space, tiny_space_path, tiny_idx_dir,
                                                                   tmp_path):
    from tvmnas.search.run import CHECKPOINT_FORMAT, CHECKPOINT_VERSION
    from tvmnas.torch_file import load_tagged, save_tagged

    cfg = config(tiny_space_path, tiny_idx_dir, **EARLIER_DEFAULTS)
    data = data_for(cfg, tiny_space)
    run = tmp_path / "run"
    run_search(cfg, tiny_space, TABLE, data, run, stop_after_epochs=1)
    old = {k: v for k, v in cfg.to_json().items() if k not in EARLIER_DEFAULTS}  # saved before every one of them
    (run / "config.json").write_text(json.dumps(old))
    ckpt = load_tagged(run / "checkpoint.pt", CHECKPOINT_FORMAT, CHECKPOINT_VERSION, "search checkpoint")
    save_tagged(run / "checkpoint.pt", CHECKPOINT_FORMAT, CHECKPOINT_VERSION, {**ckpt, "config": old})
    resumed = SearchConfig.from_json(old, "config.json")
    assert resumed == cfg
    assert run_search(resumed, tiny_space, TABLE, data, run, resume=True).arch_ops
    assert SearchConfig.from_json(config(tiny_space_path, tiny_idx_dir).to_json(), "c").supernet == "shared"


@pytest.mark.parametrize("weight_paths", WEIGHT_PATHS)
def test_weight_steps_train_the_favoured_paths_or_all_alike(tiny_space, tiny_space_path, tiny_idx_dir,
                                                             weight_paths):
    from tvmnas.search.run import make_state, train_epoch

    cfg = config(tiny_space_path, tiny_idx_dir, supernet="shared", weight_paths=weight_paths, arch_every=1000)
    data = data_for(cfg, tiny_space)
    state = make_state(tiny_space, cfg, len(data.train))
    with torch.no_grad():
        for alpha in state.net.alphas():
            alpha.copy_(torch.tensor([30.0] + [-30.0] * (len(alpha) - 1)))  # decided on each layer's first path
    train_epoch(state, data, TABLE, cfg, epoch=1)  # after the warm-up; no architecture step (arch_every)
    steps = {(i, op): int(layer.norms[c].depthwise.num_batches_tracked)  # forward passes in train mode
             for i, layer in enumerate(state.net.layers) for c, op in enumerate(layer.choices) if op != "zero"}
    trained = {key for key, n in steps.items() if n > 0}
    favoured = {(i, layer.choices[0]) for i, layer in enumerate(state.net.layers)}
    slowest = [(i, layer.choices[max(range(len(ms)), key=ms.__getitem__)])
               for i, (layer, ms) in enumerate(zip(state.net.layers, TABLE.layer_ms))]
    weight_steps = len(data.train) // cfg.batch_size + (len(data.train) % cfg.batch_size > 0)
    if weight_paths == "alpha":
        assert trained == favoured
    else:
        assert trained > favoured
    # the sandwich rule runs each layer's slowest path in every step, besides the sampled one
    assert all(steps[key] >= weight_steps for key in slowest) == (weight_paths == "sandwich")


def test_missing_and_corrupt_data(tiny_idx_dir, tmp_path):
    with pytest.raises(TvmnasError, match="no data folder"):
        load_search_data(tmp_path / "nowhere", 1, 8, 0.25, 0)
    (tiny_idx_dir / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(TvmnasError, match="missing data file .*t10k-labels"):
        load_search_data(tiny_idx_dir, 1, 8, 0.25, 0)
    (tiny_idx_dir / "train-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8b broken gzip")
    with pytest.raises(TvmnasError, match="corrupt data file .*train-images"):
        load_search_data(tiny_idx_dir, 1, 8, 0.25, 0)


def test_image_folder_data(tmp_path):
    import numpy as np
    from PIL import Image

    for split, n in (("train", 6), ("test", 2)):
        for cls in ("cat", "dog"):
            (tmp_path / split / cls).mkdir(parents=True)
            for i in range(n):
                Image.fromarray(np.full((12, 10, 3), 40 * i, np.uint8)).save(tmp_path / split / cls / f"{i}.png")
    data = load_search_data(tmp_path, 1, 8, 0.25, 0)
    assert data.train.images.shape[1:] == (1, 8, 8) and data.train.classes == ("cat", "dog")
    assert len(data.train) + len(data.valid) == 12 and len(data.test) == 4


def test_split_is_seeded_and_disjoint(tiny_idx_dir):
    a = load_search_data(tiny_idx_dir, 1, 8, 0.25, seed=7)
    b = load_search_data(tiny_idx_dir, 1, 8, 0.25, seed=7)
    assert (a.valid.labels == b.valid.labels).all() and (a.valid.images == b.valid.images).all()


@pytest.mark.parametrize("loss", ["add#abs", "add#linear", "mul#log", "none"])
def test_every_loss_runs_architecture_steps(tiny_space, tiny_space_path, tiny_idx_dir, tmp_path, loss):
    cfg = config(tiny_space_path, tiny_idx_dir, loss=loss, epochs=1, warmup_epochs=0)
    result = run_search(cfg, tiny_space, TABLE, data_for(cfg, tiny_space), tmp_path / "run")
    assert result.log[0]["arch_steps"] > 0


def test_goal_steers_add_linear_but_only_scales_mul_log(tiny_space, tiny_space_path, tiny_idx_dir, tmp_path):
    """Under Adam, mul#log's goal multiplies the whole loss and cancels out; add#linear's does not."""
    def alphas(loss, goal, name):
        cfg = config(tiny_space_path, tiny_idx_dir, loss=loss, latency_ms=goal, epochs=2, warmup_epochs=1,
                     entropy_weight=0.0, derive="argmax")
        run_search(cfg, tiny_space, TABLE, data_for(cfg, tiny_space), tmp_path / name)
        ckpt = torch.load(tmp_path / name / "checkpoint.pt", weights_only=True)["supernet"]
        return [v for k, v in ckpt.items() if k.endswith("alpha")]

    mul_a, mul_b = alphas("mul#log", 1.0, "m1"), alphas("mul#log", 3.0, "m2")
    assert all(torch.allclose(a, b, atol=1e-4) for a, b in zip(mul_a, mul_b))
    add_a, add_b = alphas("add#linear", 1.0, "a1"), alphas("add#linear", 3.0, "a2")
    assert not all(torch.allclose(a, b, atol=1e-4) for a, b in zip(add_a, add_b))


def test_add_abs_pulls_the_expected_latency_to_the_goal_from_both_sides(tiny_space, tiny_space_path, tiny_idx_dir,
                                                                      tmp_path):
    """With the accuracy term out of the way (no entropy push), a tight goal lowers E[LAT] and a loose one raises
    it: the absolute loss steers towards the goal, not simply down."""
    def expected(goal, name):
        cfg = config(tiny_space_path, tiny_idx_dir, latency_ms=goal, epochs=3, warmup_epochs=1, loss_lambda=5.0,
                     entropy_weight=0.0)
        return run_search(cfg, tiny_space, TABLE, data_for(cfg, tiny_space), tmp_path / name).log[-1][
            "expected_latency_ms"]

    start = 0.5 + 1.5 + 0.3  # uniform paths: fixed + mean of each layer
    assert expected(1.6, "tight") < start < expected(2.9, "loose")


def test_cosine_arch_lr_decays_to_zero_over_the_search(tiny_space, tiny_space_path, tiny_idx_dir, monkeypatch):
    import tvmnas.search.run as run

    cfg = config(tiny_space_path, tiny_idx_dir, arch_lr=0.2, arch_lr_schedule="cosine")
    assert [cfg.arch_lr_at(t) for t in (0.0, 0.5, 1.0)] == pytest.approx([0.2, 0.1, 0.0])
    assert config(tiny_space_path, tiny_idx_dir, arch_lr=0.2).arch_lr_at(1.0) == 0.2  # constant
    seen = []
    real_step = run.arch_step
    monkeypatch.setattr(run, "arch_step", lambda net, opt, *a, **k: seen.append(opt.param_groups[0]["lr"])
                        or real_step(net, opt, *a, **k))
    data = data_for(cfg, tiny_space)
    state = run.make_state(tiny_space, cfg, len(data.train))
    for epoch in (1, 2):  # the two epochs after the warm-up
        run.train_epoch(state, data, TABLE, cfg, epoch=epoch)
    assert len(seen) > 4 and seen == sorted(seen, reverse=True) and seen[0] > 0.19 and seen[-1] < 1e-9


def test_architecture_samples_average_their_draws(tiny_space, tiny_space_path, tiny_idx_dir):
    """arch_samples=2 updates with the mean of the alpha gradients of its two batches, each with paths drawn for
    it: the same batches and draws, one step each with a step size of 0, give the two gradients."""
    from tvmnas.data.loading import batches
    from tvmnas.search.run import arch_step, make_state

    cfg = config(tiny_space_path, tiny_idx_dir, arch_samples=2)
    data = data_for(cfg, tiny_space)
    draws = list(batches(data.valid, [np.arange(16), np.arange(16, 32)], torch.device("cpu")))

    def steps(cfg, lr, groups):
        torch.manual_seed(0)
        state = make_state(tiny_space, cfg, len(data.train))
        with torch.no_grad():
            for alpha in state.net.alphas():  # not uniform, so the draws and their gradients differ
                alpha.copy_(torch.linspace(-0.5, 0.5, len(alpha)))
        for group in state.arch_opt.param_groups:
            group["lr"] = lr
        gen, grads = torch.Generator().manual_seed(3), []
        for group in groups:
            arch_step(state.net, state.arch_opt, TABLE, cfg, group, gen)
            grads.append([alpha.grad.clone() for alpha in state.net.alphas()])
        return grads

    averaged, = steps(cfg, 0.1, [draws])
    one, two = steps(config(tiny_space_path, tiny_idx_dir), 0.0, [draws[:1], draws[1:]])
    assert any(not torch.allclose(a, b) for a, b in zip(one, two))  # the draws differ
    assert all(torch.allclose(m, (a + b) / 2, atol=1e-6) for m, a, b in zip(averaged, one, two))
    with pytest.raises(TvmnasError, match="arch_samples must be >= 1"):
        config(tiny_space_path, tiny_idx_dir, arch_samples=0)


def test_architecture_samples_take_a_batch_each(tiny_space, tiny_space_path, tiny_idx_dir, monkeypatch):
    import tvmnas.search.run as run

    cfg = config(tiny_space_path, tiny_idx_dir, arch_samples=3)
    seen = []
    real_step = run.arch_step
    monkeypatch.setattr(run, "arch_step", lambda net, opt, table, cfg, draws, *a, **k: seen.append(
        [tuple(y.tolist()) for _, y in draws]) or real_step(net, opt, table, cfg, draws, *a, **k))
    data = data_for(cfg, tiny_space)
    run.train_epoch(run.make_state(tiny_space, cfg, len(data.train)), data, TABLE, cfg, epoch=1)
    assert seen and all(len(draws) == 3 and len(set(draws)) == 3 for draws in seen)


def test_the_search_ends_decided_and_reports_it(tiny_space, tiny_space_path, tiny_idx_dir, tmp_path):
    cfg = config(tiny_space_path, tiny_idx_dir, epochs=4, entropy_weight=1.0)
    run_search(cfg, tiny_space, TABLE, data_for(cfg, tiny_space), tmp_path / "run")
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert min(summary["top_probabilities"]) >= 0.5 and summary["stable_last_epochs"]
    assert summary["predicted_latency_ms"] <= cfg.latency_ms and summary["goal_share"] <= 1.0


def test_epoch_smaller_than_a_batch_is_refused(tiny_space_path, tiny_idx_dir):
    with pytest.raises(TvmnasError, match="images_per_epoch must be at least the batch size"):
        config(tiny_space_path, tiny_idx_dir, images_per_epoch=8)


def test_sharded_steps_are_the_same_at_any_thread_count(tiny_space, tiny_space_path, tiny_idx_dir):
    """With 2 shards per batch every shard runs on one thread and the shards' gradients are added in order: a
    process with 2 threads computes bit for bit what one with 1 thread does (and so what 2 processes do), where
    plain steps' float sums change order with the threads."""
    from tvmnas.dist import Shards
    from tvmnas.search.run import make_state, train_epoch

    cfg = config(tiny_space_path, tiny_idx_dir, shards=2)
    data = data_for(cfg, tiny_space)
    learned = []
    threads = torch.get_num_threads()
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            state = make_state(tiny_space, cfg, len(data.train))
            train_epoch(state, data, TABLE, cfg, epoch=1, shards=Shards(2))  # weight and architecture steps
            assert torch.get_num_threads() == n  # restored after the steps
            learned.append(dict(state.net.named_parameters()))
            norms = [m for m in state.net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
            assert all(m.track_running_stats and int(m.num_batches_tracked) == 0 for m in norms)
    finally:
        torch.set_num_threads(threads)
    assert learned[0].keys() == learned[1].keys()
    assert all(torch.equal(learned[0][k], learned[1][k]) for k in learned[0])
    assert learned[0]["layers.0.alpha"].abs().max() > 0  # architecture steps ran


def test_shards_add_in_shard_order_and_refuse_what_does_not_split(tiny_space_path, tiny_idx_dir):
    from tvmnas.dist import Shards, World

    rows = [[torch.tensor([1e8, 1.0])], [torch.tensor([-1e8, 1.0])], [torch.tensor([1.0, 1e8])]]
    total, = Shards(3).sum(rows)
    assert total.tolist() == [(1e8 + -1e8) + 1.0, 1e8]  # ((a + b) + c) in float32: the order shows
    with pytest.raises(TvmnasError, match="3 shard.s. per batch do not split over 2 processes"):
        Shards(3, World(0, 2))
    with pytest.raises(TvmnasError, match="a batch of 16 does not split into 3 equal shards"):
        config(tiny_space_path, tiny_idx_dir, shards=3)


def test_rerank_trains_the_shortlist_from_scratch_and_keeps_the_best(tiny_space, tiny_space_path, tiny_idx_dir,
                                                                      tmp_path, monkeypatch):
    import tvmnas.search.rerank as rerank_module
    from tvmnas.search.rerank import RERANK_SEED_OFFSET

    cfg = config(tiny_space_path, tiny_idx_dir, latency_ms=2.2, epochs=2, rerank=3)  # 3 networks fit 2.2 ms
    data = data_for(cfg, tiny_space)
    run = tmp_path / "run"
    result = run_search(cfg, tiny_space, TABLE, data, run)
    summary = json.loads((run / "summary.json").read_text())
    ranked = summary["rerank"]
    assert len(ranked) == 3 and len({tuple(r["arch"]) for r in ranked}) == 3
    assert [r["valid_acc"] for r in ranked] == sorted((r["valid_acc"] for r in ranked), reverse=True)
    assert all(r["predicted_latency_ms"] <= 2.2 for r in ranked)
    assert summary["arch"] == ranked[0]["arch"] == list(result.arch_ops) == list(load_arch(run / "arch.json").ops)
    by_probability = sorted(ranked, key=lambda r: -r["log_probability"])
    for i, r in enumerate(by_probability):  # rerank/0 trains the most probable
        trained = json.loads((run / "rerank" / str(i) / "summary.json").read_text())
        assert trained["arch"] == r["arch"] and trained["valid_acc"] == r["valid_acc"]
        assert trained["test_acc"] is None and trained["epochs"] == cfg.rerank_epochs  # the test split unseen
        ckpt = torch.load(run / "rerank" / str(i) / "checkpoint.pt", weights_only=True)
        assert ckpt["config"]["seed"] == cfg.seed + RERANK_SEED_OFFSET

    def no_training(*args, **kwargs):
        raise AssertionError("a finished rerank training was trained again")

    monkeypatch.setattr(rerank_module, "train_network", no_training)
    again = run_search(cfg, tiny_space, TABLE, data, run, resume=True)  # a rerun reuses the finished trainings
    assert again.arch_ops == result.arch_ops
    assert json.loads((run / "summary.json").read_text())["rerank"] == ranked
    other = run / "rerank" / "0" / "summary.json"  # a shortlist folder that holds another network's training
    other.write_text(json.dumps({**json.loads(other.read_text()), "arch": ranked[-1]["arch"][::-1]}))
    with pytest.raises(TvmnasError, match="holds a training of another network"):
        run_search(cfg, tiny_space, TABLE, data, run, resume=True)


def test_rerank_keeps_the_best_trained_not_the_most_probable(tiny_space, tiny_space_path, tiny_idx_dir, tmp_path,
                                                             monkeypatch):
    import tvmnas.search.rerank as rerank_module
    from tvmnas.train.run import TrainResult

    accs = iter([0.2, 0.7, 0.5])  # the shortlist's trainings, most probable first

    def fake_training(settings, space, arch, data, out_dir, **kwargs):
        assert data.test is None and settings.epochs == 2
        return TrainResult(next(accs), None, 1.0, [])

    monkeypatch.setattr(rerank_module, "train_network", fake_training)
    cfg = config(tiny_space_path, tiny_idx_dir, latency_ms=2.2, epochs=2, rerank=3, rerank_epochs=2)
    data = data_for(cfg, tiny_space)
    result = run_search(cfg, tiny_space, TABLE, data, tmp_path / "run")
    ranked = json.loads((tmp_path / "run" / "summary.json").read_text())["rerank"]
    assert [r["valid_acc"] for r in ranked] == [0.7, 0.5, 0.2]
    assert list(result.arch_ops) == ranked[0]["arch"]
    assert ranked[0]["log_probability"] < ranked[2]["log_probability"]  # the second most probable kept
