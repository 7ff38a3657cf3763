"""The exercise checkers: a right answer passes with one line, each typical wrong answer is named."""

import math

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from scipy import ndimage, stats
from scipy.special import softmax
from scipy.spatial.distance import cdist

from pcnotes import course as exercises
from pcnotes.stages import s5_coreset as coreset

# ---------------------------------------------------------------------------
# Right answers, written the way a learner would
# ---------------------------------------------------------------------------


def patchify(features, patch_size):
    batch, channels, height, width = features.shape
    columns = F.unfold(features, kernel_size=patch_size, padding=patch_size // 2)
    return columns.reshape(batch, channels, patch_size, patch_size, height * width).permute(0, 4, 1, 2, 3)


def align(patches, grid, target_grid):
    batch, _, channels, p, _ = patches.shape
    maps = patches.reshape(batch, *grid, channels, p, p).permute(0, 3, 4, 5, 1, 2).reshape(-1, 1, *grid)
    resized = F.interpolate(maps, size=target_grid, mode="bilinear", align_corners=False)
    resized = resized.reshape(batch, channels, p, p, *target_grid).permute(0, 4, 5, 1, 2, 3)
    return resized.reshape(batch, -1, channels, p, p)


def mean_mapper(patches, dim):
    return F.adaptive_avg_pool1d(patches.reshape(len(patches), 1, -1), dim).squeeze(1)


def aggregator(layer_embeddings, dim):
    return F.adaptive_avg_pool1d(layer_embeddings.reshape(len(layer_embeddings), 1, -1), dim).squeeze(1)


def coreset_size(num_points, ratio):
    return max(1, int(num_points * ratio))


def image_score(features, bank, batch_size):
    return cdist(features, bank).min(axis=1).reshape(batch_size, -1).max(axis=1)


def reweighting(features, bank, batch_size, b, *, weight=lambda softmax: 1 - softmax, power=1,
                neighbours="m*"):
    scores = []
    for patches in features.reshape(batch_size, -1, features.shape[1]):
        distances = cdist(patches, bank)
        worst = distances.min(axis=1).argmax()
        m_star = distances[worst].argmin()
        if neighbours == "m*":
            around = [j for j in np.argsort(cdist(bank[m_star][None], bank)[0]) if j != m_star][:b]
            support = [m_star, *around]
        else:
            support = np.argsort(distances[worst])[: b + 1]
        d = np.linalg.norm(bank[support] - patches[worst], axis=1) ** power
        softmax = np.exp(d - d.max()) / np.exp(d - d.max()).sum()
        scores.append(weight(softmax[0]) * distances[worst, m_star])
    return np.array(scores)


def auroc(labels, scores, tie=0.5):
    labels = np.asarray(labels).astype(bool)
    difference = scores[labels][:, None] - scores[~labels][None, :]
    return float(((difference > 0).sum() + tie * (difference == 0).sum()) / difference.size)


def reweighting_with_m_star_twice(features, bank, batch_size, b):
    scores = []
    for patches in features.reshape(batch_size, -1, features.shape[1]):
        distances = cdist(patches, bank)
        worst = distances.min(axis=1).argmax()
        m_star = distances[worst].argmin()
        support = [m_star, *np.argsort(cdist(bank[m_star][None], bank)[0])[:b]]  # m* comes first again
        d = np.linalg.norm(bank[support] - patches[worst], axis=1)
        scores.append((1 - np.exp(d[0]) / np.exp(d).sum()) * distances[worst, m_star])
    return np.array(scores)


def pro(masks, maps, threshold, structure=np.ones((3, 3)), strict=False):
    overlaps = []
    for mask, values in zip(masks, maps):
        labeled, count = ndimage.label(mask, structure=structure)
        detected = values > threshold if strict else values >= threshold
        overlaps += [detected[labeled == region].mean() for region in range(1, count + 1)]
    return float(np.mean(overlaps))


RIGHT = [
    (exercises.check_patchify, patchify),
    (exercises.check_align, align),
    (exercises.check_mean_mapper, mean_mapper),
    (exercises.check_aggregator, aggregator),
    (exercises.check_coreset_size, coreset_size),
    (exercises.check_greedy_k_center, coreset.greedy_k_center),
    (exercises.check_image_score, image_score),
    (exercises.check_reweighting, reweighting),
    (exercises.check_auroc, auroc),
    (exercises.check_pro, pro),
]


def test_every_checker_is_listed_with_its_notebook():
    assert [checker for checker, _ in exercises.CHECKERS.values()] == [checker for checker, _ in RIGHT]
    assert len(exercises.CHECKERS) >= 7
    assert {notebook for _, notebook in exercises.CHECKERS.values()} == {
        "02_locally_aware_patches", "03_coreset", "04_scoring_and_heatmaps", "05_evaluation"}


@pytest.mark.parametrize("checker, solution", RIGHT, ids=[c.__name__ for c, _ in RIGHT])
def test_a_right_answer_passes_with_one_success_line(checker, solution, capsys):
    assert checker(solution) is True
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 and lines[0].startswith("✓ ") and "correct on all" in lines[0]


# ---------------------------------------------------------------------------
# Right answers written other ways: every one passes
# ---------------------------------------------------------------------------


def patchify_transpose_reshape(features, p):
    batch, channels, height, width = features.shape
    return F.unfold(features, p, padding=p // 2).transpose(1, 2).reshape(batch, height * width, channels, p, p)


def patchify_tensor_unfold(features, p):
    batch, channels, height, width = features.shape
    q = p // 2
    windows = F.pad(features, (q, q, q, q)).unfold(2, p, 1).unfold(3, p, 1)  # (B, C, H, W, p, p)
    return windows.permute(0, 2, 3, 1, 4, 5).reshape(batch, height * width, channels, p, p)


def patchify_module(features, p):
    batch, channels = features.shape[:2]
    columns = nn.Unfold(kernel_size=(p, p), padding=p // 2, stride=1)(features)
    return columns.view(batch, channels, p, p, -1).permute(0, 4, 1, 2, 3).contiguous()


def align_single_permute(patches, grid, target_grid):
    batch, _, channels, p, _ = patches.shape
    maps = patches.permute(0, 2, 3, 4, 1).reshape(batch, channels * p * p, *grid)
    resized = F.interpolate(maps, size=target_grid, mode="bilinear", align_corners=False)
    return resized.reshape(batch, channels, p, p, -1).permute(0, 4, 1, 2, 3)


def align_upsample_module(patches, grid, target_grid):
    batch, _, channels, p, _ = patches.shape
    maps = patches.reshape(batch, *grid, channels * p * p).permute(0, 3, 1, 2)
    resized = nn.Upsample(size=tuple(target_grid), mode="bilinear")(maps)
    return resized.flatten(2).transpose(1, 2).reshape(batch, -1, channels, p, p)


def pool_by_hand(flat, dim):
    length = flat.shape[1]
    return torch.stack([flat[:, i * length // dim: -(-(i + 1) * length // dim)].mean(1) for i in range(dim)], 1)


def greedy_first_pick_then_loop(points, m):
    distances = np.sqrt(((points[:, None] - points[None]) ** 2).sum(-1))
    selected = [int(np.argmax(np.sqrt((distances**2).sum(1))))]
    min_dist = distances[selected[0]].copy()
    while len(selected) < m:
        selected.append(int(np.argmax(min_dist)))
        min_dist = np.minimum(min_dist, distances[selected[-1]])
        min_dist[selected[-1]] = 0
    return np.asarray(selected, dtype=np.int64)


def greedy_torch(points, m):
    x = torch.from_numpy(np.asarray(points, dtype=np.float64))
    distances = torch.cdist(x, x)
    min_dist, selected = torch.linalg.norm(distances, dim=1), []
    for _ in range(m):
        selected.append(int(torch.argmax(min_dist)))
        min_dist = torch.minimum(min_dist, distances[:, selected[-1]])
    return np.array(selected)


def image_score_float32_expansion(features, bank, batch_size):
    f, b = features.astype(np.float32), bank.astype(np.float32)
    squared = (f**2).sum(1)[:, None] - 2 * f @ b.T + (b**2).sum(1)[None]
    return np.sqrt(np.clip(squared, 0, None)).min(1).reshape(batch_size, -1).max(1)


def image_score_torch_float32(features, bank, batch_size):
    distances = torch.cdist(torch.from_numpy(features), torch.from_numpy(bank))
    return distances.min(1).values.reshape(batch_size, -1).max(1).values


def image_score_per_image(features, bank, batch_size):
    return np.array([cdist(image, bank).min(1).max() for image in np.split(features, batch_size)])


def reweighting_torch_topk_m_star_last(features, bank, batch_size, b):
    bank_t, scores = torch.from_numpy(bank), []
    for patches in torch.from_numpy(features).reshape(batch_size, -1, features.shape[1]):
        distances = torch.cdist(patches, bank_t)
        nearest, index = distances.min(1)
        worst = int(nearest.argmax())
        m_star = int(index[worst])
        _, around = torch.topk(torch.cdist(bank_t[m_star][None], bank_t)[0], b + 1, largest=False)
        around = [j for j in around.tolist() if j != m_star][:b]
        d = distances[worst, [*around, m_star]].double().numpy()  # m* last this time
        scores.append((1 - softmax(d)[-1]) * float(nearest[worst]))
    return torch.tensor(scores)


def reweighting_sorted_bank(features, bank, batch_size, b):
    bank, scores = np.asarray(bank, dtype=np.float64), []
    for patches in np.asarray(features, dtype=np.float64).reshape(batch_size, -1, bank.shape[1]):
        distances = cdist(patches, bank)
        worst = int(np.argmax(distances.min(axis=1)))
        m_star = int(np.argmin(distances[worst]))
        order = np.argsort(np.linalg.norm(bank - bank[m_star], axis=1), kind="stable")
        d = distances[worst, [m_star, *order[order != m_star][:b]]]
        scores.append((1.0 - np.exp(d[0] - d.max()) / np.exp(d - d.max()).sum()) * distances[worst, m_star])
    return np.array(scores)


def auroc_by_ranks(labels, scores):
    labels = np.asarray(labels).astype(bool)
    ranks = stats.rankdata(scores)
    n_bad, n_good = labels.sum(), (~labels).sum()
    return float((ranks[labels].sum() - n_bad * (n_bad + 1) / 2) / (n_bad * n_good))


def auroc_loop(labels, scores):
    bad = [s for s, y in zip(scores, labels) if y]
    good = [s for s, y in zip(scores, labels) if not y]
    return sum(1.0 if a > g else 0.5 if a == g else 0.0 for a in bad for g in good) / (len(bad) * len(good))


def pro_stack_with_flat_structure(masks, maps, threshold):
    structure = np.zeros((3, 3, 3))
    structure[1] = 1  # 8-connected within an image, never across two
    labeled, count = ndimage.label(masks, structure=structure)
    hits = np.bincount(labeled[maps >= threshold], minlength=count + 1)[1:]
    return float((hits / np.bincount(labeled.ravel(), minlength=count + 1)[1:]).mean())


RIGHT_VARIANTS = [
    (exercises.check_patchify, patchify_transpose_reshape),
    (exercises.check_patchify, patchify_tensor_unfold),
    (exercises.check_patchify, patchify_module),
    (exercises.check_align, align_single_permute),
    (exercises.check_align, align_upsample_module),
    (exercises.check_mean_mapper, lambda x, dim: F.adaptive_avg_pool1d(x.flatten(1)[:, None], dim)[:, 0]),
    (exercises.check_mean_mapper, lambda x, dim: F.adaptive_avg_pool1d(x.flatten(1), dim)),  # unbatched (C, L)
    (exercises.check_mean_mapper, lambda x, dim: nn.AdaptiveAvgPool1d(dim)(x.reshape(len(x), 1, -1)).squeeze(1)),
    (exercises.check_mean_mapper, lambda x, dim: F.interpolate(x.reshape(len(x), 1, -1), size=dim, mode="area")[:, 0]),
    (exercises.check_mean_mapper, lambda x, dim: pool_by_hand(x.reshape(len(x), -1), dim)),
    (exercises.check_aggregator, lambda x, dim: F.adaptive_avg_pool1d(x.flatten(1), dim)),
    (exercises.check_aggregator, lambda x, dim: pool_by_hand(x.flatten(1), dim)),
    (exercises.check_aggregator, lambda x, dim: mean_mapper(torch.cat(x.unbind(1), dim=1), dim)),
    (exercises.check_coreset_size, lambda n, r: int(n * r) or 1),
    (exercises.check_coreset_size, lambda n, r: max(1, math.floor(n * r))),
    (exercises.check_coreset_size, lambda n, r: max(1, int(r * n))),
    (exercises.check_greedy_k_center, greedy_first_pick_then_loop),
    (exercises.check_greedy_k_center, greedy_torch),
    (exercises.check_image_score, image_score_float32_expansion),
    (exercises.check_image_score, image_score_torch_float32),
    (exercises.check_image_score, image_score_per_image),
    (exercises.check_reweighting, reweighting_sorted_bank),
    (exercises.check_reweighting, reweighting_torch_topk_m_star_last),
    (exercises.check_auroc, auroc_by_ranks),
    (exercises.check_auroc, auroc_loop),
    (exercises.check_pro, pro_stack_with_flat_structure),
]


@pytest.mark.parametrize("checker, solution", RIGHT_VARIANTS,
                         ids=[f"right-{i:02d}" for i in range(1, len(RIGHT_VARIANTS) + 1)])
def test_a_right_answer_written_another_way_passes(checker, solution, capsys):
    assert checker(solution) is True, capsys.readouterr().out
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 and lines[0].startswith("✓ ")


# ---------------------------------------------------------------------------
# Wrong answers, each with the words its message must contain
# ---------------------------------------------------------------------------


def patchify_no_padding(features, p):
    batch, channels = features.shape[:2]
    return F.unfold(features, kernel_size=p).reshape(batch, channels, p, p, -1).permute(0, 4, 1, 2, 3)


def patchify_reshape_only(features, p):
    batch, channels, height, width = features.shape
    return F.unfold(features, kernel_size=p, padding=p // 2).reshape(batch, height * width, channels, p, p)


def patchify_window_transposed(features, p):
    return patchify(features, p).transpose(3, 4)


def patchify_fixed_three(features, p):
    return patchify(features, 3)


def patchify_with_grid(features, p):
    return patchify(features, p), features.shape[2:]


def align_with(**interpolate):
    def wrong(patches, grid, target_grid):
        batch, _, channels, p, _ = patches.shape
        maps = patches.reshape(batch, *grid, channels, p, p).permute(0, 3, 4, 5, 1, 2).reshape(-1, 1, *grid)
        resized = F.interpolate(maps, size=target_grid, **interpolate)
        return resized.reshape(batch, channels, p, p, *target_grid).permute(0, 4, 5, 1, 2, 3).reshape(
            batch, -1, channels, p, p)
    return wrong


def align_no_permute(patches, grid, target_grid):
    batch, _, channels, p, _ = patches.shape
    resized = F.interpolate(patches.reshape(-1, 1, *grid), size=target_grid, mode="bilinear")
    return resized.reshape(batch, -1, channels, p, p)


def greedy(points, m, start=None, update=np.minimum):
    distances = cdist(points, points)
    min_dist = np.linalg.norm(distances, axis=1) if start is None else start(points, distances)
    selected = []
    for _ in range(m):
        selected.append(int(np.argmax(min_dist)))
        min_dist = update(min_dist, distances[:, selected[-1]])
    return np.array(selected)


def greedy_from(first):
    def wrong(points, m):
        distances = cdist(points, points)
        selected = [first(points, distances)]
        min_dist = distances[selected[0]]
        for _ in range(m - 1):
            selected.append(int(np.argmax(min_dist)))
            min_dist = np.minimum(min_dist, distances[:, selected[-1]])
        return np.array(selected)
    return wrong


def greedy_from_point_0(points, m):
    distances = cdist(points, points)
    selected, min_dist = [0], distances[0]
    for _ in range(m - 1):
        selected.append(int(np.argmax(min_dist)))
        min_dist = np.minimum(min_dist, distances[:, selected[-1]])
    return np.array(selected)


def image_score_by_expansion(features, bank, batch_size):
    squared = (features**2).sum(1)[:, None] - 2 * features @ bank.T + (bank**2).sum(1)
    with np.errstate(invalid="ignore"):  # rounding takes some zero distances below 0
        return np.sqrt(squared - 1e-3).min(1).reshape(batch_size, -1).max(1)


def pro_3d(masks, maps, threshold):
    labeled, count = ndimage.label(masks, structure=np.ones((3, 3, 3)))
    return float(np.mean([(maps[labeled == r] >= threshold).mean() for r in range(1, count + 1)]))


WRONG = [
    # patchify
    ("patchify: no padding", exercises.check_patchify, patchify_no_padding, ["3x4 grid instead of 5x6", "padding"]),
    ("patchify: reshape without permute", exercises.check_patchify, patchify_reshape_only,
     ["positions and channels are swapped", "permute(0, 4, 1, 2, 3)"]),
    ("patchify: window transposed", exercises.check_patchify, patchify_window_transposed, ["window axes are swapped"]),
    ("patchify: fixed p=3", exercises.check_patchify, patchify_fixed_three, ["3x3 windows for patch_size=5"]),
    ("patchify: (patches, grid)", exercises.check_patchify, patchify_with_grid, ["tuple", "not (patches, grid)"]),
    ("patchify: numpy", exercises.check_patchify, lambda f, p: patchify(f, p).numpy(), ["ndarray", "torch tensor"]),
    ("patchify: float64", exercises.check_patchify, lambda f, p: patchify(f, p).double(), ["dtype", "float64"]),
    ("patchify: positions last", exercises.check_patchify, lambda f, p: patchify(f, p).permute(0, 2, 3, 4, 1),
     ["positions are still last"]),
    # align
    ("align: align_corners=True", exercises.check_align, align_with(mode="bilinear", align_corners=True),
     ["align_corners=True", "align_corners=False"]),
    ("align: nearest", exercises.check_align, align_with(mode="nearest"), ["nearest neighbours", "bilinear"]),
    ("align: no permute", exercises.check_align, align_no_permute, ["mixes entries of different positions"]),
    ("align: grid not flattened", exercises.check_align,
     lambda p, g, t: align(p, g, t).reshape(p.shape[0], *t, *p.shape[2:]), ["flatten the grid"]),
    # mean mapper
    ("mean mapper: channel means first", exercises.check_mean_mapper,
     lambda x, dim: mean_mapper(x.mean(dim=(2, 3), keepdim=True), dim), ["averaged each channel's p x p window"]),
    ("mean mapper: (p, p, C) order", exercises.check_mean_mapper,
     lambda x, dim: mean_mapper(x.permute(0, 2, 3, 1), dim), ["(p, p, C)"]),
    ("mean mapper: equal chunks", exercises.check_mean_mapper,
     lambda x, dim: torch.stack([c.mean(1) for c in np.array_split(x.reshape(len(x), -1), dim, axis=1)], 1),
     ["do not overlap"]),
    ("mean mapper: (N, 1, dim)", exercises.check_mean_mapper,
     lambda x, dim: F.adaptive_avg_pool1d(x.reshape(len(x), 1, -1), dim), ["(N, 1, dim)", "squeeze"]),
    # aggregator
    ("aggregator: mean over layers", exercises.check_aggregator,
     lambda x, dim: F.adaptive_avg_pool1d(x.mean(1, keepdim=True), dim).squeeze(1), ["averaged over the layers"]),
    ("aggregator: no pooling", exercises.check_aggregator, lambda x, dim: x.reshape(len(x), -1),
     ["did not pool"]),
    # coreset size
    ("coreset size: round", exercises.check_coreset_size, lambda n, r: max(1, round(n * r)),
     ["rounded to the nearest integer", "int(N * ratio)"]),
    ("coreset size: ceil", exercises.check_coreset_size, lambda n, r: max(1, int(np.ceil(n * r))),
     ["rounded up"]),
    ("coreset size: one more", exercises.check_coreset_size, lambda n, r: max(1, int(n * r)) + 1,
     ["off by one", "one more"]),
    ("coreset size: no minimum", exercises.check_coreset_size, lambda n, r: int(n * r), ["keep 0 points"]),
    ("coreset size: float", exercises.check_coreset_size, lambda n, r: float(max(1, int(n * r))),
     ["float", "return an int"]),
    # greedy k-center
    ("greedy: starts from point 0", exercises.check_greedy_k_center, greedy_from_point_0,
     ["first pick is point 0", "row of the distance matrix"]),
    ("greedy: starts from the point farthest from point 0", exercises.check_greedy_k_center,
     lambda x, m: greedy(x, m, start=lambda pts, d: d[0]), ["your first pick is point 21, expected point 29", "largest norm"]),
    ("greedy: ties to the highest index", exercises.check_greedy_k_center,
     lambda x, m: len(x) - 1 - greedy(x[::-1], m), ["on a tie you pick the later point", "lowest index"]),
    ("greedy: squared distances", exercises.check_greedy_k_center,
     greedy_from(lambda x, d: np.argmax(np.linalg.norm(d**2, axis=1))), ["squared distances"]),
    ("greedy: starts from the largest point", exercises.check_greedy_k_center,
     greedy_from(lambda x, d: np.argmax(np.linalg.norm(x, axis=1))), ["largest norm ||x||"]),
    ("greedy: np.maximum", exercises.check_greedy_k_center, lambda x, m: greedy(x, m, update=np.maximum),
     ["same point wins every time", "np.minimum"]),
    ("greedy: a tensor", exercises.check_greedy_k_center, lambda x, m: torch.from_numpy(greedy(x, m)),
     ["tensor where indices were expected"]),
    ("greedy: the points", exercises.check_greedy_k_center, lambda x, m: x[greedy(x, m)],
     ["selected points, not their indices"]),
    ("greedy: one too many", exercises.check_greedy_k_center, lambda x, m: greedy(x, m + 1),
     ["off by one", "9 indices for m=8"]),
    ("greedy: sorted", exercises.check_greedy_k_center, lambda x, m: np.sort(greedy(x, m)), ["sorted"]),
    ("greedy: float indices", exercises.check_greedy_k_center, lambda x, m: greedy(x, m).astype(float),
     ["dtype float64", "integers"]),
    ("greedy: a list", exercises.check_greedy_k_center, lambda x, m: greedy(x, m).tolist(), ["list", "np.array"]),
    # image score
    ("image score: squared", exercises.check_image_score,
     lambda f, bank, b: (cdist(f, bank) ** 2).min(1).reshape(b, -1).max(1), ["squared distances", "square root"]),
    ("image score: mean", exercises.check_image_score,
     lambda f, bank, b: cdist(f, bank).min(1).reshape(b, -1).mean(1), ["averaged the patch scores", "max"]),
    ("image score: wrong images", exercises.check_image_score,
     lambda f, bank, b: cdist(f, bank).min(1).reshape(-1, b).max(0), ["wrong images"]),
    ("image score: one number", exercises.check_image_score, lambda f, bank, b: cdist(f, bank).min(1).max(),
     ["one number", "one score per image"]),
    ("image score: NaN from the expansion", exercises.check_image_score, image_score_by_expansion,
     ["NaN", "Clamp at 0"]),
    # eq. 7
    ("eq. 7: no 1 -", exercises.check_reweighting,
     lambda *a: reweighting(*a, weight=lambda s: s), ["1 - is missing"]),
    ("eq. 7: squared softmax", exercises.check_reweighting, lambda *a: reweighting(*a, power=2),
     ["squared distances"]),
    ("eq. 7: test patch's neighbours", exercises.check_reweighting,
     lambda *a: reweighting(*a, neighbours="test patch"), ["test patch's nearest bank entries", "N_b(m*)"]),
    ("eq. 7: m* among its own neighbours", exercises.check_reweighting, reweighting_with_m_star_twice,
     ["m* is counted as one of its own b neighbours"]),
    ("eq. 7: unweighted", exercises.check_reweighting, lambda *a: reweighting(*a, weight=lambda s: 1.0),
     ["without its weight"]),
    # AUROC
    ("AUROC: ties as 0", exercises.check_auroc, lambda y, s: auroc(y, s, tie=0), ["ties counted as 0", "1/2"]),
    ("AUROC: ties as 1", exercises.check_auroc, lambda y, s: auroc(y, s, tie=1), ["ties counted as 1", "1/2"]),
    ("AUROC: labels swapped", exercises.check_auroc, lambda y, s: auroc(1 - np.asarray(y, dtype=int), s),
     ["labels swapped"]),
    ("AUROC: over N * N", exercises.check_auroc,
     lambda y, s: auroc(y, s) * (np.sum(y) * np.sum(1 - np.asarray(y, dtype=int))) / len(y) ** 2,
     ["wrong denominator", "N * N"]),
    ("AUROC: a tensor", exercises.check_auroc, lambda y, s: torch.tensor(auroc(y, s)), ["torch tensor", "float"]),
    # PRO
    ("PRO: 4-connected", exercises.check_pro, lambda m, a, t: pro(m, a, t, structure=None), ["4-connected"]),
    ("PRO: strict >", exercises.check_pro, lambda m, a, t: pro(m, a, t, strict=True), ["map > t", ">="]),
    ("PRO: pixel recall", exercises.check_pro, lambda m, a, t: float((a[m.astype(bool)] >= t).mean()),
     ["pixel recall", "per region"]),
    ("PRO: 3-D labels", exercises.check_pro, pro_3d, ["3-D volume"]),
    ("PRO: per image", exercises.check_pro,
     lambda m, a, t: float(np.mean([pro(m[i:i + 1], a[i:i + 1], t) for i in range(len(m)) if m[i].any()])),
     ["averaged per image"]),
]


@pytest.mark.parametrize("checker, wrong, words", [w[1:] for w in WRONG], ids=[w[0] for w in WRONG])
def test_a_typical_wrong_answer_is_named(checker, wrong, words, capsys):
    assert checker(wrong) is False
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 and lines[0].startswith("✗ "), lines
    for word in words:
        assert word in lines[0], f"{word!r} not in {lines[0]!r}"


def test_a_wrong_answer_that_is_no_typical_mistake_says_where_it_differs(capsys):
    assert exercises.check_patchify(lambda f, p: patchify(f, p) + 0.5) is False
    line = capsys.readouterr().out.strip()
    assert "values differ from pcnotes.stages.s2_patches.patchify" in line and "at index" in line


@pytest.mark.parametrize("odd", ["no idea", {"a": 1}, np.array(["x", "y"]), None, [torch.zeros(2)]])
def test_an_odd_answer_gets_one_line_not_a_crash(odd, capsys):
    assert exercises.check_auroc(lambda labels, scores: odd) is False
    assert exercises.check_patchify(lambda features, p: odd) is False
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and all(line.startswith("✗ ") for line in lines), lines
    assert "the AUROC, a float" in lines[0] and "the patches tensor (B, H*W, C, p, p)" in lines[1]


def test_an_exception_is_reported_in_one_line_with_its_type_and_message(capsys):
    def broken(features, patch_size):
        raise KeyError("layer9")

    assert exercises.check_patchify(broken) is False
    line = capsys.readouterr().out.strip()
    assert line.startswith("✗ patchify: your function raised KeyError: 'layer9'") and "\n" not in line


def test_the_learner_editions_stub_is_not_done_yet_in_one_line(capsys):
    """The stub fails its check without an exception, so that "Run all" goes on with the library's stage."""
    def stub(features, patch_size):
        raise NotImplementedError(f'Exercise "patchify": {exercises.STUB_PHRASE}, in place of this line')

    assert exercises.check_patchify(stub) is False
    assert capsys.readouterr().out == ("✗ patchify: not done yet: write your solution in place of the "
                                       "`raise NotImplementedError` line above, then run this check again\n")


def test_another_not_implemented_error_is_the_learners_error(capsys):
    def unfinished(features, patch_size):
        raise NotImplementedError("padding comes later")

    assert exercises.check_patchify(unfinished) is False
    assert capsys.readouterr().out.startswith(
        "✗ patchify: your function raised NotImplementedError: padding comes later [on 2 images")


def test_the_learners_function_cannot_spoil_the_cases_by_changing_its_inputs(capsys):
    def vandal(features, patch_size):
        answer = patchify(features, patch_size).clone()
        features.zero_()
        return answer

    assert exercises.check_patchify(vandal) and exercises.check_patchify(patchify)


@pytest.mark.parametrize("seed, n, m", [(0, 300, 30), (1, 64, 64), (2, 120, 1)])
def test_the_reference_greedy_picks_what_pcnotes_greedy_coreset_picks(seed, n, m):
    points = np.random.default_rng(seed).normal(size=(n, 16)).astype(np.float32)
    library = coreset.greedy_coreset(points, min(1.0, (m + 0.5) / n), projection_dim=None, loop="plain")
    assert len(library) == m
    assert np.array_equal(coreset.greedy_k_center(points, m), library)


# ---------------------------------------------------------------------------
# More wrong answers, under neutral names: what a learner might write, and the words its line must hold
# ---------------------------------------------------------------------------


def _patches(columns, batch, channels, p):
    return columns.reshape(batch, channels, p, p, -1).permute(0, 4, 1, 2, 3)


def patchify_padded(mode):
    def answer(features, p):
        batch, channels = features.shape[:2]
        return _patches(F.unfold(F.pad(features, (p // 2,) * 4, mode=mode), p), batch, channels, p)
    return answer


def patchify_unfold(**unfold):
    def answer(features, p):
        batch, channels = features.shape[:2]
        return _patches(F.unfold(features, p, **{"padding": p // 2, **unfold}), batch, channels, p)
    return answer


def patchify_columns_first(features, p):
    batch, channels, height, width = features.shape
    q = p // 2
    windows = F.pad(features, (q, q, q, q)).unfold(2, p, 1).unfold(3, p, 1)
    return windows.permute(0, 3, 2, 1, 4, 5).reshape(batch, height * width, channels, p, p)


def align_resized(size=lambda target: tuple(target), read=lambda grid: tuple(grid), **interpolate):
    def answer(patches, grid, target_grid):
        batch, _, channels, p, _ = patches.shape
        maps = patches.reshape(batch, *read(grid), channels, p, p).permute(0, 3, 4, 5, 1, 2)
        resized = F.interpolate(maps.reshape(-1, 1, *read(grid)), size=size(target_grid), **interpolate)
        return resized.reshape(batch, channels, p, p, -1).permute(0, 4, 1, 2, 3)
    return answer


def fixed_window_pool(round_up=False):
    def answer(x, dim):
        flat = x.reshape(len(x), 1, -1)
        kernel = -(-flat.shape[-1] // dim) if round_up else flat.shape[-1] // dim
        return F.avg_pool1d(flat, kernel, ceil_mode=round_up).squeeze(1)
    return answer


def greedy_loop(update=np.minimum, first=None, drop=False):
    def answer(points, m):
        distances = cdist(points, points)
        min_dist = np.linalg.norm(distances, axis=1)
        start, selected = int(first(min_dist)) if first else None, []
        for step in range(m):
            selected.append(start if step == 0 and first else int(np.argmax(min_dist)))
            if drop:
                min_dist[selected[-1]] = -np.inf
            else:
                min_dist = update(min_dist, distances[:, selected[-1]])
        return np.array(selected)
    return answer


def top_share_of_patches(share):
    def answer(features, bank, batch_size):
        scores = cdist(features, bank).min(1).reshape(batch_size, -1)
        k = max(1, int(share * scores.shape[1]))
        return np.sort(scores, axis=1)[:, -k:].mean(1)
    return answer


def image_score_with(k=1, metric="euclidean", patches=np.max, percentile=None):
    def answer(features, bank, batch_size):
        per_patch = np.sort(cdist(features, bank, metric), axis=1)[:, :k].mean(1).reshape(batch_size, -1)
        return np.percentile(per_patch, percentile, axis=1) if percentile else patches(per_patch, axis=1)
    return answer


def reweighting_variant(kind):
    def answer(features, bank, batch_size, b):
        shape = (-1, batch_size, features.shape[1]) if kind == "order" else (batch_size, -1, features.shape[1])
        images = features.reshape(shape).transpose(1, 0, 2) if kind == "order" else features.reshape(shape)
        scores = []
        for patches in images:
            distances = cdist(patches, bank)
            worst = distances.min(1).argmax()
            m_star = distances[worst].argmin()
            order = np.argsort(np.linalg.norm(bank - bank[m_star], axis=1), kind="stable")
            others = order[order != m_star][:b]
            origin = bank[m_star] if kind == "origin" else patches[worst]
            to = lambda entries: np.linalg.norm(bank[entries] - origin, axis=1)  # noqa: E731
            if kind == "b entries":
                d = to(order[:b])
                weight = 1 - np.exp(d[0]) / np.exp(d).sum()
            elif kind == "literal":
                weight = 1 - np.exp(distances[worst, m_star]) / np.exp(to(others)).sum()
            elif kind == "everything":
                d = to(np.arange(len(bank)))
                weight = 1 - np.exp(d[m_star]) / np.exp(d).sum()
            else:
                d = to([m_star, *others])
                weight = 1 - np.exp(d[0]) / np.exp(d).sum()
            s_star = distances[worst, m_star]
            scores.append(weight * (s_star**2 if kind == "power" else s_star))
        return np.array(scores)
    return answer


def auroc_indexed(complement):
    def answer(labels, scores):
        labels = np.asarray(labels)
        difference = scores[labels][:, None] - scores[complement(labels)][None, :]
        return float(((difference > 0).sum() + 0.5 * (difference == 0).sum()) / difference.size)
    return answer


def auroc_pairs(scale=1.0, divide=True, ties_leave=False):
    def answer(labels, scores):
        labels = np.asarray(labels).astype(bool)
        difference = scores[labels][:, None] - scores[~labels][None, :]
        if ties_leave:
            return float((difference > 0).sum() / (difference != 0).sum())
        total = (difference > 0).sum() + 0.5 * (difference == 0).sum()
        return float(scale * total / difference.size if divide else total)
    return answer


def pro_regions(detect=lambda values, t: values >= t, regions=lambda count: range(1, count + 1), iou=False):
    def answer(masks, maps, threshold):
        overlaps = []
        for mask, values in zip(masks, maps):
            labeled, count = ndimage.label(mask, structure=np.ones((3, 3)))
            found = detect(values, threshold)
            for r in regions(count):
                region = labeled == r
                overlaps.append((found & region).sum() / (found | region).sum() if iou else found[region].mean())
        return float(np.mean(overlaps))
    return answer


def pro_of_found_regions(masks, maps, threshold):
    overlaps = []
    for mask, values in zip(masks, maps):
        labeled, count = ndimage.label(values >= threshold, structure=np.ones((3, 3)))
        overlaps += [mask[labeled == r].mean() for r in range(1, count + 1)]
    return float(np.mean(overlaps)) if overlaps else 0.0


MORE_WRONG = [
    (exercises.check_patchify, patchify_padded("reflect"), ["mode='reflect'", "pads with zeros"]),
    (exercises.check_patchify, patchify_padded("replicate"), ["mode='replicate'", "pads with zeros"]),
    (exercises.check_patchify, patchify_unfold(stride=3), ["stride=3", "only 4 of the 30", "stride 1"]),
    (exercises.check_patchify, patchify_unfold(padding=3), ["padding=3", "9x10 grid instead of 5x6"]),
    (exercises.check_patchify, patchify_columns_first, ["run down the columns"]),
    (exercises.check_patchify, lambda f, p: patchify(f, p).reshape(len(f), *f.shape[2:], *patchify(f, p).shape[2:]),
     ["(B, H, W, C, p, p)", "flatten"]),
    (exercises.check_align, align_resized(size=lambda t: (t[1], t[0]), mode="bilinear"),
     ["height and width are swapped", "size=target_grid"]),
    (exercises.check_align, align_resized(mode="bicubic", align_corners=False), ["mode='bicubic'", "bilinear"]),
    (exercises.check_align, align_resized(mode="area"), ["'area'", "bilinear"]),
    (exercises.check_align, align_resized(read=lambda g: (g[1], g[0]), mode="bilinear"),
     ["you read the grid as 4x3"]),
    (exercises.check_align, lambda patches, grid, target: patches, ["own 3x4 grid", "resize"]),
    (exercises.check_mean_mapper, fixed_window_pool(), ["fixed window (kernel_size=4", "9 values", "adaptive"]),
    (exercises.check_mean_mapper, fixed_window_pool(round_up=True), ["fixed window (kernel_size=5", "adaptive"]),
    (exercises.check_mean_mapper, lambda x, dim: mean_mapper(x.transpose(2, 3), dim), ["column by column"]),
    (exercises.check_aggregator, lambda x, dim: mean_mapper(x.sum(1), dim), ["summed the layers"]),
    (exercises.check_aggregator, lambda x, dim: x.sum(1), ["summed the layers"]),
    (exercises.check_aggregator, lambda x, dim: F.adaptive_avg_pool1d(x, dim), ["pooled each layer on its own"]),
    (exercises.check_aggregator, lambda x, dim: F.adaptive_avg_pool1d(x, dim).flatten(1), ["did not pool"]),
    (exercises.check_aggregator, lambda x, dim: mean_mapper(x[:, -1], dim), ["only the last layer"]),
    (exercises.check_aggregator, lambda x, dim: x.mean(1), ["averaged over the layers"]),
    (exercises.check_coreset_size, lambda n, r: n // round(1 / r), ["round(1 / ratio) = 3", "multiply"]),
    (exercises.check_coreset_size, lambda n, r: max(1, int(n // (1 / r))), ["N // (1 / ratio)", "multiply"]),
    (exercises.check_coreset_size, lambda n, r: max(1, int(n * (1 - r))), ["1 - ratio"]),
    (exercises.check_greedy_k_center, greedy_loop(update=lambda old, new: new),
     ["point 29 was already chosen at step 1", "fold the new centre's distances into min_dist"]),
    (exercises.check_greedy_k_center, greedy_loop(first=np.argmin), ["most central", "np.argmax"]),
    (exercises.check_greedy_k_center, greedy_loop(drop=True), ["order of their row norms", "np.minimum"]),
    (exercises.check_image_score, top_share_of_patches(0.1), ["6 largest patch scores", "max"]),
    (exercises.check_image_score, top_share_of_patches(0.05), ["3 largest patch scores", "max"]),
    (exercises.check_image_score, image_score_with(k=3), ["3 nearest bank entries", "k = 1"]),
    (exercises.check_image_score, image_score_with(k=5), ["5 nearest bank entries"]),
    (exercises.check_image_score, image_score_with(metric="cosine"), ["cosine distance", "Euclidean"]),
    (exercises.check_image_score, image_score_with(metric="cityblock"), ["L1", "Euclidean"]),
    (exercises.check_image_score, image_score_with(metric="chebyshev"), ["Chebyshev", "Euclidean"]),
    (exercises.check_image_score, image_score_with(percentile=99), ["99th percentile"]),
    (exercises.check_image_score, image_score_with(patches=np.min), ["smallest patch score"]),
    (exercises.check_image_score, image_score_with(k=None), ["every bank entry"]),
    (exercises.check_reweighting, reweighting_variant("b entries"),
     ["m* counted among its b neighbours (anomalib's convention)", "{m*} ∪ N_b(m*)", "leave m* out"]),
    (exercises.check_reweighting, reweighting_variant("literal"),
     ["N_b(m*) only, without m*", "read literally", "{m*} ∪ N_b(m*)"]),
    (exercises.check_reweighting, reweighting_variant("everything"), ["whole bank"]),
    (exercises.check_reweighting, reweighting_variant("origin"), ["distances from m*", "test patch"]),
    (exercises.check_reweighting, reweighting_variant("power"), ["s* is squared"]),
    (exercises.check_reweighting, reweighting_variant("order"), ["wrong images"]),
    (exercises.check_auroc, auroc_indexed(lambda y: 1 - y), ["as integers", "boolean mask"]),
    (exercises.check_auroc, auroc_indexed(lambda y: ~y), ["as integers", "boolean mask"]),
    (exercises.check_auroc, auroc_pairs(scale=100), ["percentage"]),
    (exercises.check_auroc, auroc_pairs(divide=False), ["the count", "divide"]),
    (exercises.check_auroc, auroc_pairs(ties_leave=True), ["tied pairs out of the denominator"]),
    (exercises.check_pro, pro_regions(detect=lambda values, t: values < t), ["below the threshold"]),
    (exercises.check_pro, pro_regions(iou=True), ["IoU"]),
    (exercises.check_pro, pro_regions(regions=lambda count: range(1, count)), ["skipped the last region"]),
    (exercises.check_pro, pro_regions(regions=range), ["range(count)", "range(1, count + 1)"]),
    (exercises.check_pro, pro_of_found_regions, ["regions of the thresholded map"]),
]


@pytest.mark.parametrize("checker, wrong, words", MORE_WRONG,
                         ids=[f"wrong-{i:02d}" for i in range(1, len(MORE_WRONG) + 1)])
def test_a_wrong_answer_is_told_what_to_fix(checker, wrong, words, capsys):
    assert checker(wrong) is False
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 and lines[0].startswith("✗ "), lines
    for word in words:
        assert word in lines[0], f"{word!r} not in {lines[0]!r}"
