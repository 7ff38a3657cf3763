"""Approximate (HNSW) against exact nearest-neighbour search on big memory banks.

Run from the repository root on a data set in the MVTec AD layout::

    .venv/bin/python benchmarks/ann.py --data-root data/photos [--coreset-ratio 1]

For every category it fits PatchCore with the CLI's default image size and a
large memory bank (``--coreset-ratio 1``: every training patch), extracts the
test set's patch features once, and searches them against the bank with the
exact index (faiss ``IndexFlatL2``) and with HNSW (:mod:`pcnotes.fast.ann`):

* recall@1: the share of test patches whose approximate nearest neighbour is
  the exact one;
* image and pixel AUROC of both (the same features, the same maps pipeline);
* the seconds of each search and of building the HNSW graph, and the
  speed-up of the search (wall clock, one run: the machine may be shared).

Written to ``benchmarks/results/ann.json`` and ``ann.md``.
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
from torch.utils.data import DataLoader

from pcnotes.config import PatchCoreConfig
from pcnotes.data.mvtec import default_image_size, list_categories, load_split, photo_sizes
from pcnotes.fast.ann import recall_at_1
from pcnotes.model import PatchCore
from pcnotes.stages.s6_scoring import NearestNeighbours, image_scores, scores_to_grid, unpatch_scores
from pcnotes.stages.s7_maps import anomaly_map
from pcnotes.stages.s8_metrics import image_auroc, pixel_auroc

RESULTS = Path(__file__).resolve().parent / "results"


def compare(bank: np.ndarray, queries: np.ndarray) -> dict:
    """Search ``queries (Q, D)`` in ``bank (M, D)`` exactly and with HNSW: indices, distances, seconds."""
    exact = NearestNeighbours(bank)
    start = time.perf_counter()
    exact_d, exact_i = exact.search(queries, 1)
    exact_seconds = time.perf_counter() - start
    start = time.perf_counter()
    approximate = NearestNeighbours(bank, approximate="hnsw")
    build_seconds = time.perf_counter() - start
    start = time.perf_counter()
    hnsw_d, hnsw_i = approximate.search(queries, 1)
    hnsw_seconds = time.perf_counter() - start
    return {"exact": exact_d[:, 0], "hnsw": hnsw_d[:, 0], "recall_at_1": recall_at_1(exact_i, hnsw_i),
            "exact_seconds": exact_seconds, "hnsw_seconds": hnsw_seconds, "build_seconds": build_seconds}


def evaluate(root: Path, category: str, ratio: float) -> dict:
    train = load_split(root, category, "train", PatchCoreConfig())
    resize, crop = default_image_size(photo_sizes(train.paths))
    config = PatchCoreConfig(resize=resize, crop=crop, coreset_ratio=ratio)
    model = PatchCore(config).fit(DataLoader(load_split(root, category, "train", config), batch_size=8))
    test = load_split(root, category, "test", config)
    batches = list(DataLoader(test, batch_size=8))
    queries, grid = model.extract([batch["image"] for batch in batches])
    masks = np.concatenate([batch["mask"][:, 0].numpy() > 0.5 for batch in batches])
    found = compare(model.memory_bank, queries)
    row = {"category": category, "bank": int(len(model.memory_bank)), "queries": int(len(queries)),
           "recall_at_1": round(found["recall_at_1"], 4)}
    labels = np.asarray(test.labels)
    for name in ("exact", "hnsw"):
        grids = scores_to_grid(unpatch_scores(found[name], len(test)), grid)
        maps = anomaly_map(grids, size=masks.shape[1:], sigma=config.sigma)
        row[f"{name}_image_auroc"] = image_auroc(labels, image_scores(grids))
        row[f"{name}_pixel_auroc"] = pixel_auroc(masks, maps)
    for key in ("exact_seconds", "hnsw_seconds", "build_seconds"):
        row[key] = round(found[key], 3)
    row["speed_up"] = round(found["exact_seconds"] / found["hnsw_seconds"], 2)
    return row


def markdown(rows: list[dict]) -> str:
    lines = ["| category | bank | test patches | recall@1 | image AUROC exact / HNSW | pixel AUROC exact / HNSW "
             "| exact search s | HNSW search s | HNSW build s | search speed-up |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        lines.append(f"| {r['category']} | {r['bank']:,} | {r['queries']:,} | {r['recall_at_1']:.4f} "
                     f"| {r['exact_image_auroc']:.4f} / {r['hnsw_image_auroc']:.4f} "
                     f"| {r['exact_pixel_auroc']:.4f} / {r['hnsw_pixel_auroc']:.4f} | {r['exact_seconds']:.2f} "
                     f"| {r['hnsw_seconds']:.2f} | {r['build_seconds']:.2f} | {r['speed_up']:.1f}x |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", type=Path, required=True)
    parser.add_argument("--categories", nargs="+", default=None)
    parser.add_argument("--coreset-ratio", type=float, default=1.0)
    parser.add_argument("--name", default="ann")
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    rows = []
    for category in args.categories or list_categories(args.data_root):
        rows.append(evaluate(args.data_root, category, args.coreset_ratio))
        print(markdown(rows).splitlines()[-1], flush=True)
    machine = (f"{datetime.date.today()}, python {platform.python_version()}, {os.cpu_count()} CPU cores "
               "(shared with other jobs: compare within this run only)")
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / f"{args.name}.json").write_text(json.dumps(
        {"machine": machine, "data_root": str(args.data_root), "coreset_ratio": args.coreset_ratio,
         "rows": rows}, indent=1) + "\n")
    (args.results / f"{args.name}.md").write_text(
        f"# ann.py: HNSW against exact search, coreset ratio {args.coreset_ratio:g}\n\n{machine}; "
        f"data: `{args.data_root.name}`, the CLI's default image size per category.\n\n{markdown(rows)}\n")
    print(f"wrote {args.results / args.name}.json and .md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
