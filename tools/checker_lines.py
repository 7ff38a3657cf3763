"""What the course's checkers print for the wrong answers issue 19 lists: now, and at a git revision.

    python tools/checker_lines.py                       # the checkers of this tree: one line per answer
    python tools/checker_lines.py --json                # the same as JSON {wrong answer: line}
    python tools/checker_lines.py --before f3142b8^1    # a markdown table: wrong answer | before | after

``--before REV`` checks REV out into a temporary git worktree, runs this script there
(``PYTHONPATH`` at that checkout, so its ``pcnotes.course`` does the checking) and here,
and prints the table; the worktree is removed afterwards. The wrong answers are written
here, once, with the exercises' signatures, so that both revisions see the same code.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy.spatial.distance import cdist

ROOT = Path(__file__).resolve().parents[1]


def patchify_reflect(features, patch_size):
    batch, channels, height, width = features.shape
    padded = F.pad(features, (patch_size // 2,) * 4, mode="reflect")
    columns = F.unfold(padded, kernel_size=patch_size)
    return columns.reshape(batch, channels, patch_size, patch_size, height * width).permute(0, 4, 1, 2, 3)


def patchify_stride_p(features, patch_size):
    batch, channels = features.shape[:2]
    columns = F.unfold(features, kernel_size=patch_size, padding=patch_size // 2, stride=patch_size)
    return columns.reshape(batch, channels, patch_size, patch_size, -1).permute(0, 4, 1, 2, 3)


def _align(patches, grid, size, mode):
    batch, _, channels, p, _ = patches.shape
    maps = patches.reshape(batch, *grid, channels, p, p).permute(0, 3, 4, 5, 1, 2).reshape(-1, 1, *grid)
    kwargs = {} if mode == "nearest" else {"align_corners": False}
    resized = F.interpolate(maps, size=size, mode=mode, **kwargs)
    return resized.reshape(batch, channels, p, p, -1).permute(0, 4, 1, 2, 3)


def align_swapped(patches, grid, target_grid):
    return _align(patches, grid, (target_grid[1], target_grid[0]), "bilinear")


def align_bicubic(patches, grid, target_grid):
    return _align(patches, grid, tuple(target_grid), "bicubic")


def mean_mapper_fixed_kernel(patches, dim):
    flat = patches.reshape(len(patches), 1, -1)
    kernel = flat.shape[-1] // dim
    return F.avg_pool1d(flat, kernel_size=kernel, stride=kernel)[:, 0]


def aggregator_sum(layer_embeddings, dim):
    return F.adaptive_avg_pool1d(layer_embeddings.sum(dim=1, keepdim=True), dim)[:, 0]


def coreset_size_divided(num_points, ratio):
    return max(1, num_points // round(1 / ratio))


def greedy_without_fold(points, m):
    distances = cdist(points, points)
    min_dist = np.linalg.norm(distances, axis=1)
    selected = []
    for _ in range(m):
        centre = int(np.argmax(min_dist))
        selected.append(centre)
        min_dist = distances[:, centre]  # forgets every earlier pick
    return np.array(selected)


def _nearest(features, bank, metric="euclidean"):
    return cdist(np.asarray(features, np.float64), np.asarray(bank, np.float64), metric)


def image_score_top10_mean(features, bank, batch_size):
    patch = _nearest(features, bank).min(axis=1).reshape(batch_size, -1)
    k = max(1, int(0.1 * patch.shape[1]))
    return -np.sort(-patch, axis=1)[:, :k].mean(axis=1)


def image_score_k3(features, bank, batch_size):
    patch = np.sort(_nearest(features, bank), axis=1)[:, :3].mean(axis=1)
    return patch.reshape(batch_size, -1).max(axis=1)


def image_score_cosine(features, bank, batch_size):
    return _nearest(features, bank, "cosine").min(axis=1).reshape(batch_size, -1).max(axis=1)


def image_score_l1(features, bank, batch_size):
    return _nearest(features, bank, "cityblock").min(axis=1).reshape(batch_size, -1).max(axis=1)


def _eq7(features, bank, batch_size, b, convention):
    bank = np.asarray(bank, np.float64)
    scores = []
    for patches in np.asarray(features, np.float64).reshape(batch_size, -1, bank.shape[1]):
        distances = cdist(patches, bank)
        worst = int(np.argmax(distances.min(axis=1)))
        m_star = int(np.argmin(distances[worst]))
        order = np.argsort(np.linalg.norm(bank - bank[m_star], axis=1), kind="stable")
        others = order[order != m_star]
        support = [m_star, *others[: b - 1]] if convention == "anomalib" else [m_star, *others[:b]]
        d = distances[worst, support]
        exp = np.exp(d - d.max())
        softmax = exp[0] / (exp[1:].sum() if convention == "paper" else exp.sum())
        scores.append((1 - softmax) * distances[worst, m_star])
    return np.array(scores)


def eq7_anomalib(features, bank, batch_size, b):
    return _eq7(features, bank, batch_size, b, "anomalib")


def eq7_paper(features, bank, batch_size, b):
    return _eq7(features, bank, batch_size, b, "paper")


#: (the wrong answer as the issue names it, the checker, the function)
WRONG = [
    ("image score: the mean of the top 10 % of patch scores", "check_image_score", image_score_top10_mean),
    ("patchify: reflect padding", "check_patchify", patchify_reflect),
    ("align: target H and W swapped", "check_align", align_swapped),
    ("mean mapper: a fixed-kernel avg_pool1d", "check_mean_mapper", mean_mapper_fixed_kernel),
    ("aggregator: the layers summed instead of pooled", "check_aggregator", aggregator_sum),
    ("coreset size: N // round(1 / ratio)", "check_coreset_size", coreset_size_divided),
    ("image score: the mean over k = 3 neighbours", "check_image_score", image_score_k3),
    ("eq. 7: m* among its b neighbours (anomalib)", "check_reweighting", eq7_anomalib),
    ("eq. 7: the sum over N_b(m*) alone (the paper read literally)", "check_reweighting", eq7_paper),
    ("align: bicubic", "check_align", align_bicubic),
    ("image score: cosine distance", "check_image_score", image_score_cosine),
    ("image score: L1 distance", "check_image_score", image_score_l1),
    ("greedy k-center: the new pick not folded into the running minimum", "check_greedy_k_center",
     greedy_without_fold),
    ("patchify: stride p", "check_patchify", patchify_stride_p),
]


def checker_lines() -> dict[str, str]:
    """{wrong answer: the one line its checker prints} with the ``pcnotes.course`` on the path."""
    from pcnotes import course

    lines = {}
    for label, checker, fn in WRONG:
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            getattr(course, checker)(fn)
        lines[label] = printed.getvalue().strip()
    return lines


def lines_at(revision: str) -> dict[str, str]:
    """:func:`checker_lines` run by the ``pcnotes`` of ``revision`` (a temporary git worktree)."""
    with tempfile.TemporaryDirectory() as folder:
        checkout = Path(folder) / "checkout"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(checkout), revision],
                       check=True)
        try:
            result = subprocess.run([sys.executable, __file__, "--json"], capture_output=True, text=True,
                                    env={**os.environ, "PYTHONPATH": str(checkout)}, cwd=checkout, check=True)
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(checkout)], check=True)
    return json.loads(result.stdout)


def table(before: dict[str, str], after: dict[str, str], revision: str) -> str:
    cell = lambda line: "`" + line.replace("|", "\\|").replace("`", "'") + "`"  # noqa: E731
    rows = [f"| wrong answer | before ({revision}) | after |", "| --- | --- | --- |"]
    rows += [f"| {label} | {cell(before[label])} | {cell(after[label])} |" for label, _, _ in WRONG]
    return "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="print {wrong answer: line} as JSON")
    parser.add_argument("--before", metavar="REV", help="a git revision: print a markdown table before | after")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    if args.before:
        print(table(lines_at(args.before), checker_lines(), args.before), end="")
    elif args.json:
        print(json.dumps(checker_lines(), ensure_ascii=False, indent=1))
    else:
        for label, line in checker_lines().items():
            print(f"{label}\n    {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
