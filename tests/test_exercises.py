"""The exercise checkers: a right answer passes with one line, each typical wrong answer is named."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import ndimage
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


def test_the_learner_editions_stub_stops_the_notebook():
    def stub(features, patch_size):
        raise NotImplementedError(f"Exercise patchify: {exercises.STUB_PHRASE}")

    with pytest.raises(NotImplementedError, match=exercises.STUB_PHRASE):
        exercises.check_patchify(stub)


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
