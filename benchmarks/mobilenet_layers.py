"""Which mobilenet_v2 blocks should PatchCore read? The measurement behind the default.

Run from the repository root::

    .venv/bin/python benchmarks/mobilenet_layers.py [--ratio 0.05] [--root DIR] [--categories ...]
                                                    [--output benchmarks/results/mobilenet_layers.json]

The full run fits 6 x 3 models on all training images; expect tens of minutes on a laptop.
It writes its results to ``benchmarks/results/mobilenet_layers.json``, which the deep dive
``notebooks/deeper/01_layer_choice.ipynb`` reads and prints.

For every candidate set of layers below it fits and evaluates the whole
PatchCore pipeline (``pcnotes.app.evaluation.evaluate_category``: approximate
greedy coreset of 5 % by default, k = 1, Gaussian-smoothed maps) on every category of the data
set, and prints image AUROC, pixel AUROC and AUPRO (FPR <= 0.3), averaged over
the categories, plus the memory-bank size and the fit and predict time.
Everything else stays at ``PatchCoreConfig``'s defaults, so only the layers
change.

The candidates (stride = 224 / output width; the first layer sets the patch
grid, later layers are aligned to it):

=============================  ========  ==========================================
layers                         strides   idea
=============================  ========  ==========================================
features.6 + features.13       8 / 16    the default: last block of each stage
features.6 + features.10       8 / 16    stride-16 block before the 64->96 channel change
features.10 + features.13      16 / 16   both at stride 16: a 14x14 grid
features.13 + features.16      16 / 32   deeper and coarser: 14x14 grid, 7x7 context
features.6                     8         one layer only
features.3 + features.6        4 / 8     earlier and finer: a 56x56 grid, 4x the patches
=============================  ========  ==========================================

The metrics are deterministic (seeded coreset, fixed data). The times are
wall-clock on whatever machine runs this, so compare them only within one
run. Nothing is asserted: this script measures, the tests check.

The results file holds, for every candidate, the per-category metrics and
their means, plus the data set, the configuration and the library versions
that produced them. It is written once, at the end, atomically: an
interrupted run leaves the previous file as it was.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch
import torchvision

import pcnotes
from pcnotes.stages.s5_coreset import select_coreset
from pcnotes.data.mvtec import list_categories
from pcnotes.app.evaluation import evaluate_category
from pcnotes.util.folders import write_file
from pcnotes.config import PatchCoreConfig
from pcnotes.util.paths import display_path
from pcnotes.data.synth import ensure_default_dataset, read_manifest

RESULTS = Path(__file__).resolve().parent / "results" / "mobilenet_layers.json"
METRICS = ("image_auroc", "pixel_auroc", "aupro", "memory_bank_size", "fit_seconds", "predict_seconds")

# The stride-4 pair comes last: with 4x the patches it costs the most (about 16x the coreset
# time of a 28x28 pair at the same ratio), and the other rows are printed before it starts.
CANDIDATES: list[tuple[str, ...]] = [
    ("features.6", "features.13"),
    ("features.6", "features.10"),
    ("features.10", "features.13"),
    ("features.13", "features.16"),
    ("features.6",),
    ("features.3", "features.6"),
]
DEFAULT = ("features.6", "features.13")

# Output stride of each mobilenet_v2 block for a 224x224 input (deeper/01_layer_choice prints the table).
STRIDES = {"features.3": 4, "features.6": 8, "features.10": 16, "features.13": 16, "features.16": 32}


def warm_up() -> None:
    """Compile the coreset's numba kernel once, so that no row's time includes the JIT."""
    features = np.random.default_rng(0).standard_normal((512, 1024)).astype(np.float32)
    select_coreset(features, 0.1)


def evaluate_layers(root: Path, categories: list[str], layers: tuple[str, ...], ratio: float) -> dict:
    """Fit and evaluate one candidate on every category.

    Returns ``{"mean": {...}, "categories": {category: {...}}}``: the metrics of :data:`METRICS`
    per category, and their means over the categories (``seconds``: fit + predict, summed).
    """
    rows = {}
    for category in categories:
        config = PatchCoreConfig(layers=layers, coreset_ratio=ratio, seed=0)
        _, evaluation = evaluate_category(root, category, config)
        metrics = evaluation.metrics
        rows[category] = {key: metrics[key] for key in METRICS}
        print(
            f"  {category:10s} image AUROC {metrics['image_auroc']:.3f}  pixel AUROC {metrics['pixel_auroc']:.3f}  "
            f"AUPRO {metrics['aupro']:.3f}  bank {metrics['memory_bank_size']:6d}  "
            f"fit {metrics['fit_seconds']:6.1f} s  predict {metrics['predict_seconds']:5.1f} s",
            flush=True,
        )
    mean = {key: float(np.mean([row[key] for row in rows.values()]))
            for key in ("image_auroc", "pixel_auroc", "aupro", "memory_bank_size")}
    mean["seconds"] = float(sum(row["fit_seconds"] + row["predict_seconds"] for row in rows.values()))
    return {"mean": mean, "categories": rows}


def results_record(root: Path, ratio: float, results: dict[tuple[str, ...], dict]) -> dict:
    """What the results file holds: the data, the fixed configuration, versions, every candidate."""
    manifest = read_manifest(root)
    config = PatchCoreConfig(coreset_ratio=ratio, seed=0).to_dict()
    del config["layers"]  # the one thing that changes between the candidates
    return {
        "benchmark": "benchmarks/mobilenet_layers.py",
        "data": {
            "root": display_path(root),
            "generator": None if manifest is None else f"pcnotes.data.synth v{manifest['version']}",
            "seed": None if manifest is None else manifest["seed"],
            "manifest_sha256": None if manifest is None else manifest["sha256"],
        },
        "config": config,
        "versions": {"pcnotes": pcnotes.__version__, "torch": torch.__version__,
                     "torchvision": torchvision.__version__, "python": platform.python_version()},
        "candidates": [
            {"layers": list(layers), "strides": [STRIDES[layer] for layer in layers],
             "default": layers == DEFAULT, **result}
            for layers, result in results.items()
        ],
    }


def write_results(path: Path, record: dict) -> Path:
    """Write ``record`` as JSON to ``path`` atomically: a temporary file beside it, then a rename."""
    return write_file(path, json.dumps(record, indent=2) + "\n")


def markdown_table(results: dict[tuple[str, ...], dict]) -> str:
    lines = [
        "| layers | strides | image AUROC | pixel AUROC | AUPRO | memory bank | fit + predict |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for layers, result in results.items():
        mean = result["mean"]
        name = " + ".join(f"`{layer}`" for layer in layers)
        if layers == DEFAULT:
            name += " (default)"
        strides = " / ".join(str(STRIDES[layer]) for layer in layers)
        lines.append(
            f"| {name} | {strides} | {mean['image_auroc']:.3f} | {mean['pixel_auroc']:.3f} | "
            f"{mean['aupro']:.3f} | {mean['memory_bank_size']:,.0f} | {mean['seconds']:.0f} s |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=None,
                        help="data root in the MVTec AD layout; drawn there if missing (default: the generated set)")
    parser.add_argument("--categories", nargs="*", default=None, help="default: every category under --root")
    parser.add_argument("--ratio", type=float, default=0.05,
                        help="coreset ratio (default 0.05: 0.1 takes about twice as long)")
    parser.add_argument("--output", type=Path, default=RESULTS,
                        help=f"results file (JSON, default {display_path(RESULTS)}); replaced at the end of the run")
    args = parser.parse_args(argv)
    if args.output.is_dir():
        parser.error(f"--output {args.output} is a folder; give the path of a .json file")

    root = ensure_default_dataset(args.root)  # draws the set first if it is not there yet
    categories = args.categories or list_categories(root)
    manifest = read_manifest(root)
    drawn = f"pcnotes.data.synth v{manifest['version']}, sha256 {manifest['sha256'][:12]}" if manifest else "not generated"
    print(f"data: {display_path(root)} ({drawn}; {', '.join(categories)}); coreset ratio {args.ratio}")
    print(f"{datetime.date.today()}, python {platform.python_version()}, torch {torch.__version__}, "
          f"{os.cpu_count()} CPU cores, {torch.get_num_threads()} torch threads", flush=True)
    warm_up()

    results = {}
    start = time.perf_counter()
    for layers in CANDIDATES:
        print(f"{' + '.join(layers)}:", flush=True)
        results[layers] = evaluate_layers(root, categories, layers, args.ratio)
    print(f"\nmeans over {len(categories)} categories (total {time.perf_counter() - start:.0f} s):\n")
    print(markdown_table(results))
    written = write_results(args.output, results_record(root, args.ratio, results))
    print(f"\nresults written to {display_path(written)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
