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

Then, on the category with the biggest bank, **where HNSW pays off**: random
subsets of that bank of ``--sweep`` sizes, each searched with the same
10,000 random test patches, exactly and with HNSW. From the seconds per query
of both and the build's seconds follows the number of queries after which
HNSW, its build counted, is faster; and the smallest bank at which it is
faster for a test set of 100 images at 224 x 224 (78,400 patches). The graph is
built again in every process that loads a model, so the build counts each time.

Written to ``benchmarks/results/ann.json`` and ``ann.md`` (after every
category, so that an interrupted run keeps what it measured).
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
TEST_PATCHES = 100 * 28 * 28  # a test set of 100 images at 224 x 224
SWEEP = [2_500, 5_000, 10_000, 20_000, 40_000]


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


def break_even(bank: np.ndarray, queries: np.ndarray, sizes: list[int], n_queries: int = 10_000,
               test_patches: int = TEST_PATCHES, seed: int = 0) -> list[dict]:
    """Exact and HNSW search on random subsets of ``bank (M, D)`` of ``sizes`` entries, ``n_queries`` queries each.

    Per size: seconds per 1,000 queries of both, the build's seconds, recall@1,
    the queries after which HNSW (build counted) is faster, and whether it is
    faster for ``test_patches`` queries (a test set of 100 images at 224 x 224).
    """
    rng = np.random.default_rng(seed)
    chosen = queries[rng.choice(len(queries), min(n_queries, len(queries)), replace=False)]
    rows = []
    for size in (size for size in sizes if size <= len(bank)):
        found = compare(bank[rng.choice(len(bank), size, replace=False)], chosen)
        exact, hnsw = found["exact_seconds"] / len(chosen), found["hnsw_seconds"] / len(chosen)
        after = found["build_seconds"] / (exact - hnsw) if exact > hnsw else float("inf")
        rows.append({"bank": size, "queries": len(chosen), "recall_at_1": round(found["recall_at_1"], 4),
                     "exact_ms_per_1000": round(1e6 * exact, 2), "hnsw_ms_per_1000": round(1e6 * hnsw, 2),
                     "build_seconds": round(found["build_seconds"], 3),
                     "pays_off_after_queries": None if after == float("inf") else int(after),
                     "faster_for_test_set": bool(after < test_patches)})
    return rows


def fitted(root: Path, category: str, ratio: float):
    """PatchCore at the CLI's default image size for ``category``, and its test set's features and masks."""
    train = load_split(root, category, "train", PatchCoreConfig())
    resize, crop = default_image_size(photo_sizes(train.paths))
    config = PatchCoreConfig(resize=resize, crop=crop, coreset_ratio=ratio)
    model = PatchCore(config).fit(DataLoader(load_split(root, category, "train", config), batch_size=8))
    test = load_split(root, category, "test", config)
    batches = list(DataLoader(test, batch_size=8))
    queries, grid = model.extract([batch["image"] for batch in batches])
    masks = np.concatenate([batch["mask"][:, 0].numpy() > 0.5 for batch in batches])
    return model, test, queries, grid, masks


def evaluate(model, test, queries, grid, masks, category: str) -> dict:
    """recall@1, both AUROCs with exact and HNSW patch scores, the seconds of each search and of the build."""
    config = model.config
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
    row["speed_up_with_build"] = round(found["exact_seconds"] / (found["build_seconds"] + found["hnsw_seconds"]), 2)
    return row


def markdown(rows: list[dict]) -> str:
    lines = ["| category | bank | test patches | recall@1 | image AUROC exact / HNSW | pixel AUROC exact / HNSW "
             "| exact search s | HNSW search s | HNSW build s | search speed-up | with the build |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        lines.append(f"| {r['category']} | {r['bank']:,} | {r['queries']:,} | {r['recall_at_1']:.4f} "
                     f"| {r['exact_image_auroc']:.4f} / {r['hnsw_image_auroc']:.4f} "
                     f"| {r['exact_pixel_auroc']:.4f} / {r['hnsw_pixel_auroc']:.4f} | {r['exact_seconds']:.2f} "
                     f"| {r['hnsw_seconds']:.2f} | {r['build_seconds']:.2f} | {r['speed_up']:.1f}x "
                     f"| {r['speed_up_with_build']:.1f}x |")
    return "\n".join(lines)


def sweep_markdown(rows: list[dict]) -> str:
    lines = ["| bank | recall@1 | exact ms / 1,000 queries | HNSW ms / 1,000 queries | HNSW build s "
             "| HNSW faster after queries | faster for 100 test images at 224 |",
             "| ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for r in rows:
        after = "never" if r["pays_off_after_queries"] is None else f"{r['pays_off_after_queries']:,}"
        lines.append(f"| {r['bank']:,} | {r['recall_at_1']:.4f} | {r['exact_ms_per_1000']:.1f} "
                     f"| {r['hnsw_ms_per_1000']:.1f} | {r['build_seconds']:.2f} | {after} "
                     f"| {'yes' if r['faster_for_test_set'] else 'no'} |")
    return "\n".join(lines)


def write(args, machine: str, rows: list[dict], sweep: dict | None) -> None:
    """``<name>.json`` and ``.md`` with the rows so far (and the sweep, once run)."""
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / f"{args.name}.json").write_text(json.dumps(
        {"machine": machine, "data_root": args.data_root.name, "coreset_ratio": args.coreset_ratio,
         "rows": rows, "break_even": sweep}, indent=1) + "\n")
    text = (f"# ann.py: HNSW against exact search, coreset ratio {args.coreset_ratio:g}\n\n{machine}; "
            f"data: `{args.data_root.name}`, the CLI's default image size per category.\n\n{markdown(rows)}\n")
    if sweep:
        faster = [r["bank"] for r in sweep["rows"] if r["faster_for_test_set"]]
        text += (f"\n## Where HNSW pays off\n\nRandom subsets of the bank of `{sweep['category']}`, each searched "
                 f"with the same {sweep['rows'][0]['queries']:,} random test patches; the build counted once per "
                 f"fit or load.\n\n{sweep_markdown(sweep['rows'])}\n\nFor a test set of 100 images at "
                 f"224 x 224 ({TEST_PATCHES:,} patches) HNSW, its build included, is faster "
                 + (f"from a bank of {min(faster):,} entries on (of those measured).\n" if faster
                    else "at none of the banks measured.\n"))
    (args.results / f"{args.name}.md").write_text(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", type=Path, required=True)
    parser.add_argument("--categories", nargs="+", default=None)
    parser.add_argument("--coreset-ratio", type=float, default=1.0)
    parser.add_argument("--name", default="ann")
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--sweep", type=int, nargs="*", default=SWEEP,
                        help="bank sizes for the break-even sweep, on the category with the biggest bank "
                             "(none: skip it; default: %(default)s)")
    args = parser.parse_args(argv)
    before = os.getloadavg()[0]
    rows, biggest = [], None
    for category in args.categories or list_categories(args.data_root):
        model, test, queries, grid, masks = fitted(args.data_root, category, args.coreset_ratio)
        rows.append(evaluate(model, test, queries, grid, masks, category))
        print(markdown(rows).splitlines()[-1], flush=True)
        if args.sweep and (biggest is None or len(model.memory_bank) > len(biggest[1])):
            biggest = (category, model.memory_bank, queries)
        write(args, _machine(before), rows, None)
    sweep = None
    if biggest:
        sweep = {"category": biggest[0], "rows": break_even(biggest[1], biggest[2], args.sweep)}
        print(sweep_markdown(sweep["rows"]), flush=True)
    write(args, _machine(before), rows, sweep)
    print(f"wrote {args.results / args.name}.json and .md")
    return 0


def _machine(load_before: float) -> str:
    return (f"{datetime.date.today()}, python {platform.python_version()}, {os.cpu_count()} CPU cores, load average "
            f"{load_before:.1f} before the run and {os.getloadavg()[0]:.1f} after it (shared with other jobs: "
            "compare within this run only)")


if __name__ == "__main__":
    raise SystemExit(main())
