"""Checkers for notebook 04 (stage 6): the image score and eq. 7."""

from __future__ import annotations

from typing import Callable

import numpy as np
from scipy.spatial.distance import cdist

from pcnotes.course.checking import _Case, _Answer, _check
from pcnotes.stages.s6_scoring import NearestNeighbours, image_scores, reweighted_image_scores, score_grid


def _nearest_and_farthest(features: np.ndarray, bank: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    distances = cdist(features.astype(np.float64), bank.astype(np.float64))
    return distances.min(axis=1), distances.max(axis=1)


def _image_score_case(label: str, features: np.ndarray, bank: np.ndarray, batch: int) -> _Case:
    per_image = len(features) // batch
    grid = (1, per_image)
    expected = image_scores(score_grid(NearestNeighbours(bank, backend="torch"), features, batch, grid))
    nearest, farthest = _nearest_and_farthest(features, bank)
    mistakes = [
        ("your scores are squared distances (faiss and the a² - 2ab + b² trick give squared L2); take the "
         "square root: the paper scores a patch by its Euclidean distance", (nearest**2).reshape(batch, -1).max(1)),
        ("you averaged the patch scores; eq. 6 takes each image's largest patch score (max)",
         nearest.reshape(batch, -1).mean(1)),
        ("the patches went to the wrong images: the scores are in image order, so reshape(batch_size, -1), "
         "not reshape(-1, batch_size)", nearest.reshape(-1, batch).max(0)),
        ("you measured the distance to the farthest bank entry; a patch score is the distance to the nearest one",
         farthest.reshape(batch, -1).max(1)),
        ("you returned one score per patch, (B*H*W,); the image score is the max over each image's patches",
         nearest),
        ("you returned one number; return one score per image, an array (batch_size,): reshape the patch "
         "scores to (batch_size, -1) and take the max of each row", np.array(nearest.max())),
        ("you took each image's smallest patch score; eq. 6 takes the largest (max): one anomalous patch "
         "makes the image anomalous", nearest.reshape(batch, -1).min(1)),
        ("you averaged the distances to every bank entry; a patch score is the distance to the nearest one (min)",
         _distances(features, bank).mean(1).reshape(batch, -1).max(1)),
    ]
    per_patch = nearest.reshape(batch, -1)
    largest_first = -np.sort(-per_patch, axis=1)
    top_means = np.cumsum(largest_first, axis=1) / np.arange(1, per_image + 1)
    mistakes += [(f"you averaged the {k} largest patch scores of each image ({k} of {per_image}); eq. 6 takes "
                  f"the single largest, max", top_means[:, k - 1]) for k in range(2, per_image)]
    mistakes += [(f"you took the {q}th percentile of each image's patch scores; eq. 6 takes the largest, max",
                  np.percentile(per_patch, q, axis=1)) for q in (50, 75, 90, 95, 99)]
    ranked = np.sort(_distances(features, bank), axis=1)
    mistakes += [(f"your patch score averages the distances to the {k} nearest bank entries; eq. 6 scores a patch "
                  f"by its nearest one only (k = 1), then takes each image's max",
                  ranked[:, :k].mean(1).reshape(batch, -1).max(1)) for k in range(2, min(6, len(bank) + 1))]
    for metric, name in [("cosine", "the cosine distance, 1 - cos"), ("cityblock", "the L1 (Manhattan) distance"),
                         ("chebyshev", "the L-infinity (Chebyshev) distance")]:
        other = _distances(features, bank, metric).min(1).reshape(batch, -1)
        mistakes.append((f"you measured {name}; eq. 6 uses the Euclidean distance, ||a - b||_2 "
                         f"(cdist's default metric, or torch.cdist)", other.max(1)))
    cosine_similarity = 1 - _distances(features, bank, "cosine")
    mistakes.append(("you measured the cosine similarity; eq. 6 uses the Euclidean distance, ||a - b||_2 "
                     "(cdist's default metric, or torch.cdist)", cosine_similarity.max(1).reshape(batch, -1).max(1)))
    mistakes.append(("you measured the cosine similarity; eq. 6 uses the Euclidean distance, ||a - b||_2 "
                     "(cdist's default metric, or torch.cdist)", cosine_similarity.max(1).reshape(batch, -1).min(1)))
    if len(bank) % batch == 0:
        mistakes.append(("you took each bank entry's nearest test patch (the min over the patches, axis 0); a "
                         "patch score is the test patch's distance to its nearest bank entry: the min over the "
                         "bank, axis 1", _distances(features, bank).min(0).reshape(batch, -1).max(1)))
    return _Case(label, (features, bank, batch), expected, mistakes)


def _distances(features: np.ndarray, bank: np.ndarray, metric: str = "euclidean") -> np.ndarray:
    return cdist(features.astype(np.float64), bank.astype(np.float64), metric)


def _score_inputs(rng, batch: int, per_image: int, bank_size: int, scale: float = 1.0,
                  dim: int = 8) -> tuple[np.ndarray, np.ndarray]:
    bank = rng.normal(scale=scale, size=(bank_size, dim)).astype(np.float32)
    features = rng.normal(scale=1.3 * scale, size=(batch * per_image, dim)).astype(np.float32)
    return features, bank


_IMAGE_SCORE = _Answer("array", "the image scores (B,)", "pcnotes.stages.s6_scoring.image_scores", atol=1e-3, rtol=1e-4,
                       covers="images of 64 and 100 patches, a single image, a 1x1 grid and a zero distance")


def check_image_score(fn: Callable[[np.ndarray, np.ndarray, int], np.ndarray]) -> bool:
    """Exercise "kNN patch scores -> image score" (notebook 04), eq. 6.

    ``fn(features: np.ndarray (B*H*W, D), bank: np.ndarray (M, D), batch_size: int) -> (B,)``
    image scores (numpy array or tensor): each patch scores its Euclidean
    distance to the nearest bank entry, each image the largest of its patch
    scores. Compared with ``pcnotes.stages.s6_scoring`` (``score_grid`` then ``image_scores``).
    """
    return _check("image score", fn, _image_score_cases(), _IMAGE_SCORE)


def _image_score_cases() -> list[_Case]:
    rng = np.random.default_rng(5)
    # 64 patches and more: the mean of the top 10 % (or a high percentile) is no longer the max.
    cases = [_image_score_case("3 images of 64 patches (8x8), a bank of 40", *_score_inputs(rng, 3, 64, 40), 3),
             _image_score_case("a single image of 100 patches (10x10)", *_score_inputs(rng, 1, 100, 30), 1),
             _image_score_case("a 1x1 grid: one patch per image, 4 images", *_score_inputs(rng, 4, 1, 25), 4)]
    bank = rng.normal(size=(20, 8)).astype(np.float32)
    on_bank = np.concatenate([bank[:6], rng.normal(scale=1.3, size=(6, 8)).astype(np.float32)])
    cases.append(_image_score_case("an image whose patches are all bank entries (score 0)", on_bank, bank, 2))
    return cases


def _eq7_variant(features: np.ndarray, bank: np.ndarray, batch: int, b: int, *, weight: str = "1-softmax",
                 squared_softmax: bool = False, support: str = "{m*} + N_b(m*)", from_m_star: bool = False,
                 sign: float = 1.0, squared_score: bool = False, mixed_images: bool = False) -> np.ndarray:
    """Eq. 7 in float64 with one thing changed, to recognise a typical mistake.

    ``support`` names the bank entries the softmax runs over: pcnotes' ``{m*} + N_b(m*)`` (m* first,
    then its b nearest other entries), ``m* twice`` (m* first, then its b nearest entries, m* again
    among them), ``anomalib`` (m*'s b nearest entries, m* the first of them), ``paper`` (the sum
    over N_b(m*) only, m* in the numerator alone), ``test patch`` / ``test patch b`` (the test
    patch's b + 1 / b nearest entries) or ``bank`` (every entry).
    """
    features, bank = features.astype(np.float64), bank.astype(np.float64)
    to_bank = cdist(bank, bank)
    dim = bank.shape[1]
    per_image = (features.reshape(-1, batch, dim).transpose(1, 0, 2) if mixed_images
                 else features.reshape(batch, -1, dim))
    scores = []
    for patches in per_image:
        distances = cdist(patches, bank)
        worst = int(np.argmax(distances.min(axis=1)))
        test_patch, m_star = patches[worst], int(np.argmin(distances[worst]))
        s_star = distances[worst, m_star]
        order = np.argsort(to_bank[m_star], kind="stable")
        others = [j for j in order if j != m_star][:b]
        entries = {"{m*} + N_b(m*)": [m_star, *others], "m* twice": [m_star, *order[:b]],
                   "anomalib": [m_star, *others[: b - 1]], "paper": [m_star, *others],
                   "test patch": np.argsort(distances[worst], kind="stable")[: b + 1],
                   "test patch b": np.argsort(distances[worst], kind="stable")[:b],
                   "bank": [m_star, *[j for j in range(len(bank)) if j != m_star]]}[support]
        origin = bank[m_star] if from_m_star else test_patch
        d = np.linalg.norm(bank[np.asarray(entries)] - origin, axis=1)
        d = sign * (d**2 if squared_softmax else d)
        exp = np.exp(d - d.max())
        softmax = exp[0] / (exp[1:].sum() if support == "paper" else exp.sum())
        factor = {"1-softmax": 1.0 - softmax, "softmax": softmax, "none": 1.0}[weight]
        scores.append(factor * (s_star**2 if squared_score else s_star))
    return np.array(scores)


def _reweighting_case(label: str, features: np.ndarray, bank: np.ndarray, batch: int, b: int) -> _Case:
    expected = reweighted_image_scores(NearestNeighbours(bank, backend="torch"), features, batch, b)
    variant = lambda **changed: _eq7_variant(features, bank, batch, b, **changed)  # noqa: E731
    convention = ("this exercise uses {m*} ∪ N_b(m*), as in the formula above: m* and its b nearest other bank "
                  "entries, b + 1 distances")
    mistakes = [
        ("you returned s* without its weight; eq. 7 multiplies it by 1 - softmax(d)[m*]", variant(weight="none")),
        ("you multiplied by softmax(d)[m*]; eq. 7's weight is 1 - softmax(d)[m*], the 1 - is missing",
         variant(weight="softmax")),
        ("your softmax runs over squared distances; eq. 7 takes the softmax of the Euclidean distances",
         variant(squared_softmax=True)),
        ("your softmax runs over -d; eq. 7 takes the softmax of +d (a nearby crowd of bank entries lowers the "
         "weight)", variant(sign=-1.0)),
        ("you took the test patch's nearest bank entries; eq. 7 uses N_b(m*), the b nearest neighbours of m* "
         "in the bank", variant(support="test patch")),
        ("you took the test patch's nearest bank entries; eq. 7 uses N_b(m*), the b nearest neighbours of m* "
         "in the bank", variant(support="test patch b")),
        ("m* is counted as one of its own b neighbours, so it is in d twice (as m*, then as its own nearest "
         "neighbour at distance 0): search b + 1 neighbours of m* and leave m* out of them",
         variant(support="m* twice")),
        ("m* counted among its b neighbours (anomalib's convention): your softmax runs over b distances, m* one "
         f"of them; {convention}, so search b + 1 neighbours of m* and leave m* out of them",
         variant(support="anomalib")),
        ("your sum runs over N_b(m*) only, without m* (the paper's eq. 7 read literally); "
         f"{convention}: put m* in the sum too, so that the weight is 1 - softmax(d)[m*]", variant(support="paper")),
        ("your softmax runs over the whole bank; eq. 7's runs over m* and its b nearest neighbours only",
         variant(support="bank")),
        ("your d holds the distances from m* to the bank entries; eq. 7's d holds the distances from the test "
         "patch m_test* to m* and to each of m*'s b neighbours", variant(from_m_star=True)),
        ("your s* is squared; eq. 7 re-weights s*, the Euclidean distance from m_test* to m*",
         variant(squared_score=True)),
        ("the patches went to the wrong images: the features are in image order, so reshape(batch_size, -1, D), "
         "not reshape(-1, batch_size, D)", variant(mixed_images=True)),
    ]
    return _Case(f"{label}, b={b}", (features, bank, batch, b), expected, mistakes)


_REWEIGHTING = _Answer("array", "the re-weighted image scores (B,)", "pcnotes.stages.s6_scoring.reweighted_image_scores",
                       atol=1e-3, rtol=1e-3,
                       covers="{m*} ∪ N_b(m*) on random patches, b=1, a single image, a 1x1 grid, "
                              "duplicated bank entries")


def check_reweighting(fn: Callable[[np.ndarray, np.ndarray, int, int], np.ndarray]) -> bool:
    """Exercise "eq. 7 re-weighting" (notebook 04).

    ``fn(features: np.ndarray (B*H*W, D), bank: np.ndarray (M, D), batch_size: int, b: int) -> (B,)``:
    per image, take the most anomalous patch m_test* (score s*, eq. 6) and its
    nearest bank entry m*, then return ``(1 - softmax(d)[m*]) * s*`` where ``d``
    holds the Euclidean distances from m_test* to m* and to m*'s b nearest bank
    neighbours. Compared with ``pcnotes.stages.s6_scoring.reweighted_image_scores``.

    The neighbours follow the notebook's formula and pcnotes, ``{m*} ∪ N_b(m*)``:
    b + 1 distances, m* first. The two other conventions are named when seen:
    the paper's sum over ``N_b(m*)`` alone (m* only in the numerator) and
    anomalib's, which counts m* among its b neighbours (b distances).
    """
    return _check("eq. 7 re-weighting", fn, _reweighting_cases(), _REWEIGHTING)


def _reweighting_cases() -> list[_Case]:
    rng = np.random.default_rng(6)
    cases = [_reweighting_case("2 images of 9 patches, a bank of 30",
                               *_score_inputs(rng, 2, 9, 30, scale=0.3), 2, 3),
             _reweighting_case("a single image", *_score_inputs(rng, 1, 6, 20), 1, 1),
             _reweighting_case("a 1x1 grid: one patch per image, 3 images", *_score_inputs(rng, 3, 1, 20), 3, 2)]
    features, bank = _score_inputs(rng, 2, 4, 10)
    cases.append(_reweighting_case("duplicated bank entries", features, np.concatenate([bank, bank[:5]]), 2, 2))
    return cases
