"""`proxyless-imagenet` (21 searchable layers at 224x224) searched and trained end to end on a small generated
ImageFolder of JPEG files, streamed through DataLoader workers (the latency database filled by hand)."""

import json

import numpy as np

from tvmnas.cli import main
from tvmnas.space import load_space

from tests import helpers

LATENCY_MS = {"stem": 0.5, "first": 0.3, "head": 0.4, "mb_k3_e3": 0.10, "mb_k3_e6": 0.18, "mb_k5_e3": 0.14,
              "mb_k5_e6": 0.25, "mb_k7_e3": 0.19, "mb_k7_e6": 0.33}


def image_folder(root, per_class: dict[str, int]):
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in per_class.items():
        for cls in ("cat", "dog"):
            (root / split / cls).mkdir(parents=True)
            for i in range(n):
                small = rng.integers(0, 255, (12, 16, 3), dtype=np.uint8)
                Image.fromarray(small).resize((320, 240)).save(root / split / cls / f"{i}.jpg")
    return root


def test_search_and_train_on_an_image_folder(capsys, tmp_path):
    space = load_space("proxyless-imagenet")
    helpers.fill_db(tmp_path / "lat.db", space, LATENCY_MS)
    data = image_folder(tmp_path / "images", {"train": 8, "test": 2})
    run = tmp_path / "run"
    code = main(["search", "--space", "proxyless-imagenet", "--target", "x86-cpu", "--db", str(tmp_path / "lat.db"),
                 "--latency-ms", "4.5", "--data", str(data), "--epochs", "1", "--warmup-epochs", "0",
                 "--images-per-epoch", "4", "--batch-size", "2", "--workers", "2", "--device", "cpu",
                 "--out", str(run)])
    out = capsys.readouterr().out
    assert code == 0, out
    summary = json.loads((run / "summary.json").read_text())
    assert len(summary["arch"]) == 21 and summary["predicted_latency_ms"] <= 4.5
    code = main(["train", "--run", str(run), "--epochs", "1", "--images-per-epoch", "4", "--batch-size", "2",
                 "--workers", "2", "--device", "cpu"])
    out = capsys.readouterr().out
    assert code == 0, out
    trained = json.loads((run / "train" / "summary.json").read_text())
    assert trained["test_images"] == 4 and 0.0 <= trained["test_acc"] <= 1.0
