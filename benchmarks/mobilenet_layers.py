"""Which mobilenet_v2 blocks should PatchCore read? The measurement behind the default.

Run from the repository root::

    .venv/bin/python benchmarks/mobilenet_layers.py [--ratio 0.05] [--root DIR] [--categories ...]

On 2 shared CPU cores the full run took about 26 minutes (notebook 01 has its table).

For every candidate set of layers below it fits and evaluates the whole
PatchCore pipeline (``pcnotes.evaluation.evaluate_category``: approximate
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
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from pcnotes.coreset import select_coreset
from pcnotes.data import list_categories
from pcnotes.evaluation import evaluate_category
from pcnotes.model import PatchCoreConfig
from pcnotes.synth import ensure_default_dataset, read_manifest

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

# Output stride of each mobilenet_v2 block for a 224x224 input (notebook 01 prints the table).
STRIDES = {"features.3": 4, "features.6": 8, "features.10": 16, "features.13": 16, "features.16": 32}


def warm_up() -> None:
    """Compile the coreset's numba kernel once, so that no row's time includes the JIT."""
    features = np.random.default_rng(0).standard_normal((512, 1024)).astype(np.float32)
    select_coreset(features, 0.1)


def evaluate_layers(root: Path, categories: list[str], layers: tuple[str, ...], ratio: float) -> dict:
    """Fit and evaluate one candidate on every category; return the means and the per-category rows."""
    rows = []
    for category in categories:
        config = PatchCoreConfig(layers=layers, coreset_ratio=ratio, seed=0)
        _, evaluation = evaluate_category(root, category, config)
        metrics = evaluation.metrics
        rows.append(metrics)
        print(
            f"  {category:10s} image AUROC {metrics['image_auroc']:.3f}  pixel AUROC {metrics['pixel_auroc']:.3f}  "
            f"AUPRO {metrics['aupro']:.3f}  bank {metrics['memory_bank_size']:6d}  "
            f"fit {metrics['fit_seconds']:6.1f} s  predict {metrics['predict_seconds']:5.1f} s",
            flush=True,
        )
    mean = {key: float(np.mean([row[key] for row in rows]))
            for key in ("image_auroc", "pixel_auroc", "aupro", "memory_bank_size")}
    mean["seconds"] = float(sum(row["fit_seconds"] + row["predict_seconds"] for row in rows))
    return mean


def markdown_table(results: dict[tuple[str, ...], dict]) -> str:
    lines = [
        "| layers | strides | image AUROC | pixel AUROC | AUPRO | memory bank | fit + predict |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for layers, mean in results.items():
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
    args = parser.parse_args(argv)

    root = ensure_default_dataset(args.root)  # draws the set first if it is not there yet
    categories = args.categories or list_categories(root)
    manifest = read_manifest(root)
    drawn = f"pcnotes.synth v{manifest['version']}, sha256 {manifest['sha256'][:12]}" if manifest else "not generated"
    print(f"data: {root} ({drawn}; {', '.join(categories)}); coreset ratio {args.ratio}")
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
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
