"""PatchCore on your own data set, under a small grid of options: one table.

Run from the repository root on any data set in the MVTec AD layout::

    .venv/bin/python benchmarks/real_data.py --data-root ROOT [--categories A B] [--grid small|full]

Without ``--data-root`` it uses the embedded synthetic set (generated on
first use). ``benchmarks/make_photo_set.py`` builds a set from real
photographs with synthetic defects (``--data-root data/photos``).

For every option below and every category it fits PatchCore on
``train/good`` and scores ``test`` (``pcnotes.app.evaluation.evaluate_category``,
the same code as ``python -m pcnotes evaluate``), then prints one table of the
means over the categories: image AUROC, pixel AUROC, AUPRO (FPR <= 0.3),
memory-bank size, fit and predict seconds (wall clock), and the CPU seconds
of the whole evaluation (``time.process_time``, all threads: steadier than
the wall clock when other jobs share the cores). The table and the per-category
rows are written to ``benchmarks/results/real_data_<name>.json`` and ``.md``
(``--name``, default: the data root's folder name).

The options (everything else at ``PatchCoreConfig``'s defaults for the
backbone, coreset ratio 0.1 unless ``--coreset-ratio``):

===============================  ==================  =========================================
option                           patch feature       image size
===============================  ==================  =========================================
mean_mapped 256/224              mean_mapped         resize 256, centre crop 224 (the reference)
pooled_concat 256/224            pooled_concat       resize 256, centre crop 224
mean_mapped whole                mean_mapped         whole image, shorter side 256, no crop
pooled_concat whole              pooled_concat       whole image, shorter side 256, no crop
--grid full adds:
mean_mapped 366/320              mean_mapped         resize 366, centre crop 320 (a 40x40 grid)
pooled_concat 366/320            pooled_concat       resize 366, centre crop 320
mean_mapped 256/224 b=9          mean_mapped         256/224, image score re-weighted (eq. 7)
pooled_concat 256/224 b=9        pooled_concat       256/224, image score re-weighted (eq. 7)
--grid default:
pooled_concat 256/224, pooled_concat whole, and
pooled_concat default            pooled_concat       the CLI's default: 256/224 for square
                                                     training images, else the whole image at
                                                     their median aspect ratio
===============================  ==================  =========================================

"whole" resizes every image of a category to the H x W that keeps its first
training image's aspect ratio (``pcnotes.data.mvtec.whole_image_size``: shorter
side 256, both sides multiples of 16), e.g. 600 x 250 photographs to
256 x 608.

The metrics are deterministic (seeded coreset, fixed data). The seconds are
measured on whatever machine runs this: compare them within one run only.
Nothing is asserted: this script measures, the tests check.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pcnotes.stages.s5_coreset import select_coreset
from pcnotes.data.mvtec import (MVTecDataset, default_image_size, list_categories, load_rgb, photo_sizes,
                                whole_image_size)
from pcnotes.app.evaluation import evaluate_category
from pcnotes.util.folders import write_file
from pcnotes.config import PatchCoreConfig

RESULTS = Path(__file__).resolve().parent / "results"
METRICS = ("image_auroc", "pixel_auroc", "aupro")


@dataclass(frozen=True)
class Option:
    """One row of the table: a patch feature, an image size and the eq. 7 ``b``."""

    patch_feature: str
    size: str  # "256/224", "366/320" (resize/crop) or "whole"
    reweight: int = 0

    @property
    def name(self) -> str:
        return f"{self.patch_feature} {self.size}" + (f" b={self.reweight}" if self.reweight else "")

    def image_size(self, first_image: Path, train_images: list[Path]) -> dict:
        """``resize`` and ``crop`` for a category whose first training image is ``first_image``."""
        if self.size == "default":
            resize, crop = default_image_size(photo_sizes(train_images))
            return {"resize": resize, "crop": crop}
        if self.size == "whole":
            width, height = load_rgb(first_image).size
            return {"resize": whole_image_size(width, height, shorter=256), "crop": None}
        resize, crop = (int(side) for side in self.size.split("/"))
        return {"resize": resize, "crop": crop}


SMALL = [
    Option("mean_mapped", "256/224"),
    Option("pooled_concat", "256/224"),
    Option("mean_mapped", "whole"),
    Option("pooled_concat", "whole"),
]
FULL = SMALL + [
    Option("mean_mapped", "366/320"),
    Option("pooled_concat", "366/320"),
    Option("mean_mapped", "256/224", reweight=9),
    Option("pooled_concat", "256/224", reweight=9),
]
#: The CLI's default image size (square: 256/224, else the whole image) beside the two it picks from.
DEFAULT = [
    Option("pooled_concat", "256/224"),
    Option("pooled_concat", "whole"),
    Option("pooled_concat", "default"),
]
GRIDS = {"small": SMALL, "full": FULL, "default": DEFAULT}


def warm_up() -> None:
    """Compile the coreset's numba kernel once, so that no row's time includes the JIT."""
    select_coreset(np.random.default_rng(0).standard_normal((512, 128)).astype(np.float32), 0.1)


def _size_text(config: PatchCoreConfig) -> str:
    def text(size):
        return str(size) if isinstance(size, int) else f"{size[0]}x{size[1]}"

    return f"{text(config.resize)} whole" if config.crop is None else f"{text(config.resize)}/{text(config.crop)}"


def evaluate_option(root: Path, categories: list[str], option: Option, base: dict, progress: str) -> dict:
    """Fit and evaluate one option on every category: the per-category rows and their means."""
    rows = []
    for category in categories:
        train = [Path(path) for path in MVTecDataset(root, category, "train").paths]
        config = PatchCoreConfig(**base, patch_feature=option.patch_feature, reweight=option.reweight,
                                 **option.image_size(train[0], train))
        cpu = time.process_time()
        _, evaluation = evaluate_category(root, category, config)
        row = {"category": category, "input": _size_text(config), **evaluation.metrics,
               "cpu_seconds": round(time.process_time() - cpu, 1)}
        rows.append(row)
        print(f"{progress} {option.name:26s} {category:12s} input {row['input']:12s} image AUROC "
              f"{row['image_auroc']:.3f}  pixel AUROC {row['pixel_auroc']:.3f}  AUPRO {row['aupro']:.3f}  "
              f"bank {row['memory_bank_size']:6d} x {row['feature_dim']:4d}  fit {row['fit_seconds']:5.1f} s  "
              f"predict {row['predict_seconds']:5.1f} s  CPU {row['cpu_seconds']:5.1f} s", flush=True)
    mean = {key: float(np.mean([row[key] for row in rows])) for key in METRICS}
    mean["memory_bank_size"] = float(np.mean([row["memory_bank_size"] for row in rows]))
    mean["feature_dim"] = rows[0]["feature_dim"]
    for key in ("fit_seconds", "predict_seconds", "cpu_seconds"):
        mean[key] = float(np.sum([row[key] for row in rows]))
    return {"option": option.name, "patch_feature": option.patch_feature, "size": option.size,
            "reweight": option.reweight, "mean": mean, "categories": rows}


def markdown_table(results: list[dict], n_categories: int) -> str:
    lines = [
        f"| option | D | image AUROC | pixel AUROC | AUPRO | memory bank (mean) | fit s ({n_categories} cat.) "
        f"| predict s ({n_categories} cat.) | CPU s ({n_categories} cat.) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for result in results:
        mean = result["mean"]
        lines.append(
            f"| {result['option']} | {mean['feature_dim']} | {mean['image_auroc']:.3f} | {mean['pixel_auroc']:.3f} "
            f"| {mean['aupro']:.3f} | {mean['memory_bank_size']:,.0f} | {mean['fit_seconds']:.1f} "
            f"| {mean['predict_seconds']:.1f} | {mean['cpu_seconds']:.0f} |")
    return "\n".join(lines)


def category_table(results: list[dict]) -> str:
    lines = ["| option | category | input | image AUROC | pixel AUROC | AUPRO |",
             "| --- | --- | --- | ---: | ---: | ---: |"]
    for result in results:
        for row in result["categories"]:
            lines.append(f"| {result['option']} | {row['category']} | {row['input']} | {row['image_auroc']:.3f} "
                         f"| {row['pixel_auroc']:.3f} | {row['aupro']:.3f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", type=Path, default=None,
                        help="data set in the MVTec AD layout (default: the embedded synthetic set)")
    parser.add_argument("--categories", nargs="+", default=None, help="default: every category under ROOT")
    parser.add_argument("--grid", choices=sorted(GRIDS), default="small", help="default: small (4 options)")
    parser.add_argument("--options", nargs="+", default=None, metavar="OPTION",
                        help="only these rows of the grid, by number (1 = the first)")
    parser.add_argument("--backbone", default="mobilenet_v2", help="default: mobilenet_v2")
    parser.add_argument("--weights", default="imagenet", help="default: imagenet")
    parser.add_argument("--coreset-ratio", type=float, default=0.1, help="default: 0.1")
    parser.add_argument("--name", default=None, help="results file name (default: the data root's folder name)")
    parser.add_argument("--results", type=Path, default=RESULTS, help="folder for the results (default: %(default)s)")
    args = parser.parse_args(argv)

    if args.data_root is None:
        from pcnotes.data.synth import ensure_default_dataset

        root = ensure_default_dataset()
    else:
        root = args.data_root
    categories = args.categories or list_categories(root)
    if not categories:
        parser.error(f"{root}: no category folders with train/good")
    options = GRIDS[args.grid]
    if args.options:
        options = [options[int(number) - 1] for number in args.options]
    base = {"backbone": args.backbone, "weights": args.weights, "coreset_ratio": args.coreset_ratio, "seed": 0}
    name = args.name or root.resolve().name
    print(f"data: {root} ({', '.join(categories)}); backbone {args.backbone} ({args.weights}), coreset ratio "
          f"{args.coreset_ratio}; {len(options)} options")
    machine = (f"{datetime.date.today()}, python {platform.python_version()}, torch {torch.__version__}, "
               f"{os.cpu_count()} CPU cores, {torch.get_num_threads()} torch threads")
    print(machine, flush=True)
    warm_up()

    results, start = [], time.perf_counter()
    for number, option in enumerate(options, 1):
        results.append(evaluate_option(root, categories, option, base, f"[{number}/{len(options)}]"))
    total = time.perf_counter() - start

    table = markdown_table(results, len(categories))
    print(f"\nmeans over {len(categories)} categories ({', '.join(categories)}); fit, predict and CPU seconds "
          f"summed over them; total {total:.0f} s:\n")
    print(table)
    record = {"data_root": str(root), "categories": categories, "machine": machine, **base,
              "grid": args.grid, "total_seconds": round(total, 1), "results": results}
    write_file(args.results / f"real_data_{name}.json", json.dumps(record, indent=1) + "\n")
    write_file(args.results / f"real_data_{name}.md",
                      f"# real_data.py on `{name}` ({', '.join(categories)})\n\n{machine}; backbone "
                      f"{args.backbone} ({args.weights}), coreset ratio {args.coreset_ratio}.\n"
                      f"Means over the categories; fit, predict and CPU seconds summed over them.\n\n"
                      f"{table}\n\n## Per category\n\n{category_table(results)}\n")
    print(f"\nwrote {args.results / f'real_data_{name}.json'} and .md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
