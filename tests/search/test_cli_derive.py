"""`tvmnas derive | pareto | specialize | report` on a finished tiny search."""

import json
import shutil

import pytest

from tvmnas.cli import main

from tests import helpers
from tests.conftest import DATA
from tests.search.test_cli_search import LATENCY_MS

# another device's costs for the same space: expansion is cheap there, large kernels are dear
OTHER_MS = {"stem": 0.1, "first": 0.1, "head": 0.1, "mb_k3_e1": 0.4, "mb_k3_e2": 0.2}


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_idx_dir_module, tiny_space_module):
    tmp = tmp_path_factory.mktemp("derive")
    db = tmp / "lat.db"
    helpers.fill_db(db, tiny_space_module, LATENCY_MS)
    helpers.fill_db(db, tiny_space_module, OTHER_MS, level="default")
    out = tmp / "run"
    assert main(["search", "--space", str(DATA / "tiny-space.json"), "--target", "x86-cpu", "--db", str(db),
                 "--latency-ms", "1.2", "--data", str(tiny_idx_dir_module), "--batch-size", "16", "--epochs", "3",
                 "--out", str(out)]) == 0
    return out, db


def cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def one_line(code, err, fragment):
    assert code == 2 and len(err.strip().splitlines()) == 1 and fragment in err, err


def test_derive_for_a_new_goal(run, capsys):
    folder, db = run
    code, out, err = cli(capsys, "derive", "--run", folder, "--latency-ms", "1.0", "--db", db)
    assert code == 0, err
    summary = json.loads((folder / "derived" / "x86-cpu-1ms" / "summary.json").read_text())
    assert summary["predicted_latency_ms"] <= 1.0 and summary["goal_share"] == summary["predicted_latency_ms"] / 1.0
    assert (folder / "derived" / "x86-cpu-1ms" / "arch.json").exists() and "of the goal" in out
    one_line(*cli(capsys, "derive", "--run", folder, "--latency-ms", "0.5", "--db", db)[::2],
             "below the smallest reachable latency")
    cli(capsys, "derive", "--run", folder, "--latency-ms", "99", "--db", db, "--out", folder / "big")
    cli(capsys, "derive", "--run", folder, "--latency-ms", "99", "--db", db, "--derive", "argmax", "--out",
        folder / "max")
    assert json.loads((folder / "big" / "arch.json").read_text()) == json.loads((folder / "max" / "arch.json")
                                                                                 .read_text())


def test_pareto_front_is_monotone_and_drawn(run, capsys):
    folder, db = run
    code, _, err = cli(capsys, "pareto", "--run", folder, "--points", "6", "--db", db)
    assert code == 0, err
    pareto = json.loads((folder / "pareto.json").read_text())
    front = pareto["front"]
    assert front and all(not p["dominated"] for p in front)
    assert all(a["latency_ms"] < b["latency_ms"] and a["valid_acc"] < b["valid_acc"] for a, b in zip(front, front[1:]))
    assert (folder / "report" / "pareto.png").stat().st_size > 1000


def test_derive_and_pareto_for_another_target(run, capsys, tmp_path, tiny_space_module):
    """--target picks another device's table from the database: the derived network and the front are priced
    with that device's latencies, and say which target they are for."""
    folder, db = run
    other, other_db = tmp_path / "run", tmp_path / "lat.db"
    shutil.copytree(folder, other)
    shutil.copy(db, other_db)
    helpers.fill_db(other_db, tiny_space_module, OTHER_MS, level="tuned-8", target="arm-aarch64")
    code, out, err = cli(capsys, "derive", "--run", other, "--target", "arm-aarch64", "--latency-ms", "0.9",
                         "--db", other_db)
    assert code == 0, err
    summary = json.loads((other / "derived" / "arm-aarch64-0.9ms" / "summary.json").read_text())
    ops = json.loads((other / "derived" / "arm-aarch64-0.9ms" / "arch.json").read_text())["ops"]
    priced = 0.3 + sum(OTHER_MS[op] for op in ops if op != "zero")  # stem, first and head: 0.1 ms each there
    assert summary["target"] == "arm-aarch64" and abs(summary["predicted_latency_ms"] - priced) < 1e-9
    assert summary["predicted_latency_ms"] <= 0.9

    code, _, err = cli(capsys, "pareto", "--run", other, "--target", "arm-aarch64", "--points", "3", "--db", other_db)
    assert code == 0, err
    pareto = json.loads((other / "pareto.json").read_text())
    layers = len(tiny_space_module.layers())
    assert pareto["target"] == "arm-aarch64"
    assert pareto["reachable_ms"][1] == 0.3 + layers * max(OTHER_MS["mb_k3_e1"], OTHER_MS["mb_k3_e2"])
    assert all(abs(p["latency_ms"] - 0.3 - sum(OTHER_MS[op] for op in p["arch"] if op != "zero")) < 1e-9
               for p in pareto["points"])


# non-round latencies like a measured database's (issue 22: the sweep's first budget, the minimum, was refused)
ODD_MS = {"stem": 0.0311579, "first": 0.0207771, "head": 0.0414813, "mb_k3_e1": 0.0534317, "mb_k3_e2": 0.0871143}


@pytest.mark.parametrize("points", [2, 3, 5, 8, 10])
def test_pareto_on_non_round_latencies_covers_the_reachable_range(run, capsys, tmp_path, tiny_space_module, points):
    folder, _ = run
    db = tmp_path / "odd.db"
    helpers.fill_db(db, tiny_space_module, ODD_MS)
    code, _, err = cli(capsys, "pareto", "--run", folder, "--points", points, "--db", db)
    assert code == 0, err
    pareto = json.loads((folder / "pareto.json").read_text())
    low, high = pareto["reachable_ms"]
    assert [p["budget_ms"] for p in pareto["points"] if p["latency_ms"] == low] == [low]  # the cheapest, at once
    assert all(low <= p["latency_ms"] <= p["budget_ms"] <= high for p in pareto["points"])
    front = pareto["front"]
    assert all(a["latency_ms"] < b["latency_ms"] and a["valid_acc"] < b["valid_acc"] for a, b in zip(front, front[1:]))
    assert (folder / "report" / "pareto.png").stat().st_size > 1000


def test_report_writes_its_figures(run, capsys):
    folder, _ = run
    code, out, err = cli(capsys, "report", "--run", folder)
    assert code == 0, err
    for name in ("probabilities.png", "latency.png"):
        assert (folder / "report" / name).stat().st_size > 1000 and name in out


def test_specialize_for_another_table_without_training(run, capsys, tmp_path):
    folder, db = run
    out = tmp_path / "special"
    code, stdout, err = cli(capsys, "specialize", "--run", folder, "--target", "x86-cpu", "--tune-trials", "0",
                            "--latency-ms", "0.9", "--steps", "20", "--db", db, "--out", out)
    assert code == 0, err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["level"] == "default" and summary["predicted_latency_ms"] <= 0.9
    assert summary["specialized_from"]["latency_goal_ms"] == 1.2 and "no weight trained" in stdout
    # the same weights: the specialized checkpoint differs from the run's only in the architecture parameters
    import torch

    a = torch.load(folder / "checkpoint.pt", weights_only=True)["supernet"]
    b = torch.load(out / "checkpoint.pt", weights_only=True)["supernet"]
    assert all(torch.equal(a[k], b[k]) for k in a if not k.endswith("alpha") and "running" not in k
               and "num_batches" not in k)


def test_specialize_refuses_a_target_without_a_table_and_a_run_of_another_space(run, capsys, tmp_path):
    folder, db = run
    one_line(*cli(capsys, "specialize", "--run", folder, "--target", "x86-cpu", "--tune-trials", "3",
                  "--latency-ms", "1", "--db", db)[::2], "the latency database lacks")
    # 1e-7 ms under the smallest reachable 0.5 ms: refused before any step, both numbers to the digit that differs
    one_line(*cli(capsys, "specialize", "--run", folder, "--target", "x86-cpu", "--tune-trials", "0",
                  "--latency-ms", "0.4999999", "--db", db)[::2],
             "latency goal 0.4999999 ms is below the smallest reachable latency of tiny on x86-cpu: 0.5000000 ms")
    other = tmp_path / "other"
    shutil.copytree(folder, other)
    config = json.loads((other / "config.json").read_text())
    config["space"] = "fashion-mnist"
    (other / "config.json").write_text(json.dumps(config))
    one_line(*cli(capsys, "specialize", "--run", other, "--target", "x86-cpu", "--latency-ms", "1", "--db", db)[::2],
             "was made with other settings")
