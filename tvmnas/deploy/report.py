"""The short report at the end of the pipeline: what was chosen, how accurate, how fast, where it is."""

from __future__ import annotations

import json
from pathlib import Path

from tvmnas.deploy.bundle import MANIFEST, read_manifest
from tvmnas.errors import TvmnasError
from tvmnas.run_folder import SearchRun


def search_line(search: dict) -> str:
    """How the search chose: the supernet's epochs and accuracy, or a training-free method's networks scored."""
    if search.get("method", "proxyless") != "proxyless":
        return (f"{search['method']}, {search['evaluations']} networks scored in {search['search_seconds']:.0f} s "
                "(no training)")
    return (f"{search['epochs']} epochs in {search['search_seconds']:.0f} s, supernet valid accuracy "
            f"{search['valid_acc']:.4f}")


def _read(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


def run_report(run_dir: Path) -> str:
    """The run's summary as text; its figures are written to RUN_DIR/report/ (see `tvmnas.search.figures`)."""
    from tvmnas.search.figures import write_run_figures

    run_dir = Path(run_dir)
    files = SearchRun(run_dir)
    search = _read(files.summary)
    if search is None:
        raise TvmnasError(f"{run_dir} holds no finished search (no {files.summary.name})")
    train = _read(files.train.summary)
    lines = [f"run {run_dir}: {search['target']} ({search['level']}), latency goal {search['latency_goal_ms']:g} ms",
             f"  blocks: {' '.join(search['arch'])}",
             f"  search: {search_line(search)}, predicted latency {search['predicted_latency_ms']:.4f} ms "
             f"({search.get('goal_share', search['predicted_latency_ms'] / search['latency_goal_ms']):.0%} of the "
             f"goal)"]
    if "top_probabilities" in search:
        lines.append(f"  decided: top path probability per layer "
                     f"{' '.join(f'{p:.2f}' for p in search['top_probabilities'])}; derived network "
                     f"{'the same' if search['stable_last_epochs'] else 'not the same'} over the last two epochs")
    if train is None:
        lines.append(f"  not trained yet: tvmnas train --run {run_dir}")
    else:
        test = "n/a" if train["test_acc"] is None else f"{train['test_acc']:.4f} on {train['test_images']} images"
        lines.append(f"  trained: {train['epochs']} epochs from {train['init']} in {train['train_seconds']:.0f} s, "
                     f"test accuracy {test}")
    bundles = files.bundles(MANIFEST)
    if not bundles:
        lines.append(f"  not exported yet: tvmnas export --run {run_dir} --target {search['target']}")
    for bundle in bundles:
        m = read_manifest(bundle)
        lines += [f"  bundle {bundle} ({m['target']['name']}, {m['level']}): {latency_text(m['latency'])}",
                  f"    run it: build/native/tvmnas-run {bundle} {bundle / m['sample_input']}"
                  f"   (build: make runner)"]
    figures = write_run_figures(run_dir)
    if figures:
        lines.append(f"  figures: {', '.join(str(p) for p in figures)}")
    return "\n".join(lines)


def latency_text(lat: dict) -> str:
    """Predicted vs measured, and whether they agree within the noise band."""
    if lat.get("measured_ms") is None:
        return "compiled only, not measured"
    measured = (f"measured {lat['measured_ms']:.4f} ms +/-{lat['measured_dispersion']:.0%} by "
                f"{lat['measured_by']}" + (f" (flagged: {lat['flag']})" if lat.get("flag") else ""))
    if lat.get("predicted_ms") is None:
        return f"{measured}, no prediction (profile the space first)"
    table = f" by the table at {lat['predicted_level']}" if lat.get("predicted_level") else ""
    composition = lat.get("predicted_composition")
    if composition:
        table += (f" (calibrated on {composition['networks']} whole networks)" if composition["networks"] > 1 else
                  f" (scaled x{composition['scale']:.3f} by the space's reference network)")
    return (f"{measured}, predicted {lat['predicted_ms']:.4f} ms +/-{lat['predicted_dispersion']:.0%}{table}: "
            f"{agreement_text(lat['agreement'])}")


def agreement_text(agreement: dict) -> str:
    if agreement["within_band"] is None:  # the module was compiled at another level than the table's rows
        return f"measured {agreement['error']:+.1%} from the table's prediction (the module is tuned at another level)"
    verdict = "agree within" if agreement["within_band"] else "disagree: outside"
    return (f"measured {agreement['error']:+.1%} from predicted, {verdict} the noise band "
            f"+/-{agreement['band']:.1%}")
