"""`tvmnas search` through the command line, on a latency database filled by hand for the tiny space."""

import json

import pytest

from tvmnas.cli import main

from tests import helpers

LATENCY_MS = {"stem": 0.1, "first": 0.2, "head": 0.2, "mb_k3_e1": 0.3, "mb_k3_e2": 0.5}


def fill_db(path, space, skip: str | None = None):
    helpers.fill_db(path, space, LATENCY_MS, skip=skip)


def search(capsys, *argv):
    code = main(["search", *argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def args(tiny_space, tiny_space_path, tiny_idx_dir, tmp_path):
    fill_db(tmp_path / "lat.db", tiny_space)
    return ["--space", str(tiny_space_path), "--target", "x86-cpu", "--db", str(tmp_path / "lat.db"),
            "--data", str(tiny_idx_dir), "--batch-size", "16"]


def test_search_and_resume(capsys, args, tmp_path):
    run = tmp_path / "run"
    code, out, _ = search(capsys, *args, "--latency-ms", "1.0", "--epochs", "2", "--warmup-epochs", "1",
                          "--out", str(run))
    assert code == 0, out
    assert "epoch 2/2" in out and "predicted latency" in out
    assert json.loads((run / "summary.json").read_text())["latency_goal_ms"] == 1.0
    code, _, err = search(capsys, "--resume", str(run), "--latency-ms", "2.0")
    assert code == 2 and "differs from the resumed run" in err
    code, out, _ = search(capsys, "--resume", str(run), "--db", args[args.index("--db") + 1])
    assert code == 0 and "epoch" not in out  # nothing left to do


def test_search_with_a_rerank(capsys, args, tmp_path):
    run = tmp_path / "run"
    code, out, _ = search(capsys, *args, "--latency-ms", "1.0", "--epochs", "1", "--rerank", "2", "--out", str(run))
    assert code == 0, out
    assert "rerank 1/2: training" in out and "rerank 2/2: training" in out
    assert json.loads((run / "config.json").read_text())["rerank"] == 2
    ranked = json.loads((run / "summary.json").read_text())["rerank"]
    assert len(ranked) == 2 and f"architecture: {' '.join(ranked[0]['arch'])}" in out


@pytest.mark.parametrize("goal, message", [
    ("0", "argument --latency-ms: must be > 0, not 0"), ("-3", "argument --latency-ms: must be > 0, not -3"),
    ("0.5", "below the smallest reachable latency of tiny on x86-cpu: 0.8000 ms"),
])
def test_bad_latency_goal(capsys, args, goal, message):
    code, _, err = search(capsys, *args, "--latency-ms", goal)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_missing_candidates_named(capsys, tiny_space, tiny_space_path, tmp_path):
    fill_db(tmp_path / "lat.db", tiny_space, skip="mb_k3_e2_i8_o8_s1")
    code, _, err = search(capsys, "--space", str(tiny_space_path), "--target", "x86-cpu", "--latency-ms", "1",
                          "--db", str(tmp_path / "lat.db"))
    assert code == 2 and "lacks 1 of 7 candidates" in err and "mb_k3_e2_i8_o8_s1 1x8x4x4" in err
    assert "run `tvmnas profile --space tiny --tune-trials 8` with the same --target" in err


def test_missing_database_and_data(capsys, args, tmp_path):
    code, _, err = search(capsys, *args[:4], "--latency-ms", "1", "--db", str(tmp_path / "none.db"))
    assert code == 2 and "no latency database" in err
    code, _, err = search(capsys, *args[:6], "--latency-ms", "1", "--data", str(tmp_path / "nodata"))
    assert code == 2 and "no data folder" in err


def test_new_search_needs_goal(capsys, args):
    code, _, err = search(capsys, *args)
    assert code == 2 and "--latency-ms (or --latency-share)" in err


def test_goal_as_a_share_of_the_profiled_range(capsys, args, tmp_path, tiny_space):
    """--latency-share F: the goal F of the way from the fastest to the slowest reachable network, recorded in ms;
    a resumed run keeps its goal; a share outside (0, 1] or beside --latency-ms is one line, exit 2."""
    from tvmnas.latency_db import LatencyDB
    from tvmnas.measure.method import latency_scope
    from tvmnas.search.latency import table_from_db
    from tvmnas.targets import load_target

    with LatencyDB(tmp_path / "lat.db") as db:
        table = table_from_db(tiny_space, db, latency_scope(load_target("x86-cpu"), "local", "tuned-8"))
    run = tmp_path / "share-run"
    code, out, _ = search(capsys, *args, "--latency-share", "0.25", "--epochs", "1", "--warmup-epochs", "1",
                          "--out", str(run))
    assert code == 0, out
    want = table.min_ms + 0.25 * (table.max_ms - table.min_ms)
    assert json.loads((run / "summary.json").read_text())["latency_goal_ms"] == pytest.approx(want)
    assert "(0.25 of the reachable range)" in out
    code, _, err = search(capsys, "--resume", str(run), "--latency-share", "0.5")
    assert code == 2 and "keeps its" in err and len(err.strip().splitlines()) == 1
    for bad, message in (("0", "argument --latency-share: must be > 0 and <= 1, not 0"),
                         ("1.5", "argument --latency-share: must be > 0 and <= 1, not 1.5")):
        code, _, err = search(capsys, *args, "--latency-share", bad)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    code, _, err = search(capsys, *args, "--latency-share", "0.5", "--latency-ms", "1")
    assert code == 2 and "not allowed with argument" in err


def test_naswot_search_trains_nothing_and_its_network_trains_like_any(capsys, args, tmp_path):
    """--method naswot: the best-scored network within the goal, every network scored kept; a second search into
    the same folder, a resume, --rerank, a derivation from it and --init supernet are each refused in one line."""
    run = tmp_path / "free"
    code, out, _ = search(capsys, *args, "--latency-ms", "1.2", "--method", "naswot", "--evaluations", "6",
                          "--out", str(run))
    assert code == 0, out
    summary = json.loads((run / "summary.json").read_text())
    scored = json.loads((run / "zero_cost.json").read_text())["networks"]
    assert summary["method"] == "naswot" and summary["predicted_latency_ms"] <= 1.2
    assert len(scored) == summary["evaluations"] <= 6 and scored[0]["arch"] == summary["arch"]
    assert scored[0]["score"] == max(s["score"] for s in scored)
    assert f"architecture: {' '.join(summary['arch'])}" in out
    assert not (run / "checkpoint.pt").exists()
    for argv, message in ((["--latency-ms", "1.2", "--method", "naswot", "--out", str(run)], "already holds a search"),
                          (["--latency-ms", "1.2", "--method", "naswot", "--rerank", "2"], "rerank follows"),
                          ):
        code, _, err = search(capsys, *args, *argv)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    code, _, err = search(capsys, "--resume", str(run), "--db", args[args.index("--db") + 1])
    assert code == 2 and "trains nothing to resume" in err
    code = main(["derive", "--run", str(run), "--latency-ms", "1.0", "--db", args[args.index("--db") + 1]])
    assert code == 2 and "trained no supernet" in capsys.readouterr().err
    code = main(["train", "--run", str(run), "--init", "supernet", "--epochs", "1", "--batch-size", "16"])
    assert code == 2 and "search that trained a supernet" in capsys.readouterr().err
    code = main(["train", "--run", str(run), "--epochs", "1", "--batch-size", "16"])
    assert code == 0 and (run / "train" / "summary.json").exists()
    assert "naswot, " in main_report(capsys, run)


def main_report(capsys, run):
    assert main(["report", "--run", str(run)]) == 0
    return capsys.readouterr().out
