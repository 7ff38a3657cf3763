import numpy as np
import pytest
import torch

from pcnotes.stages.s6_scoring import NearestNeighbours, image_scores, patch_scores, reweighted_image_scores


@pytest.fixture
def bank_and_queries():
    rng = np.random.default_rng(0)
    return rng.normal(size=(500, 64)).astype(np.float32), rng.normal(size=(300, 64)).astype(np.float32)


def brute_force(bank, queries, k):
    d = np.sqrt(((queries[:, None, :].astype(np.float64) - bank[None]) ** 2).sum(-1))
    order = np.argsort(d, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(d, order, axis=1), order


@pytest.mark.parametrize("k", [1, 3])
def test_faiss_and_torch_agree_and_match_brute_force(bank_and_queries, k):
    bank, queries = bank_and_queries
    d_faiss, i_faiss = NearestNeighbours(bank, backend="faiss").search(queries, k)
    d_torch, i_torch = NearestNeighbours(bank, backend="torch").search(queries, k)
    d_true, i_true = brute_force(bank, queries, k)
    assert d_faiss.shape == d_torch.shape == (300, k)
    np.testing.assert_allclose(d_faiss, d_torch, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(d_faiss, d_true, rtol=1e-4, atol=1e-4)
    assert (i_faiss == i_true).mean() > 0.99 and (i_torch == i_true).mean() > 0.99


def test_squared_reproduces_the_reference_faiss_scores(bank_and_queries):
    bank, queries = bank_and_queries
    euclid = patch_scores(NearestNeighbours(bank), queries, k=1)
    squared = patch_scores(NearestNeighbours(bank, squared=True), queries, k=1)
    np.testing.assert_allclose(squared, euclid**2, rtol=1e-5)
    assert np.array_equal(np.argsort(squared), np.argsort(euclid))  # same ranking


def test_patch_score_is_the_mean_of_k_distances():
    bank = np.array([[0.0], [1.0], [3.0]], dtype=np.float32)
    index = NearestNeighbours(bank, backend="torch")
    np.testing.assert_allclose(patch_scores(index, np.array([[0.5]]), k=1), [0.5])
    np.testing.assert_allclose(patch_scores(index, np.array([[0.5]]), k=2), [0.5])
    np.testing.assert_allclose(patch_scores(index, np.array([[0.5]]), k=3), [(0.5 + 0.5 + 2.5) / 3])


def test_k_larger_than_the_bank_and_empty_bank_are_clear_errors():
    index = NearestNeighbours(np.zeros((4, 2), np.float32))
    with pytest.raises(ValueError, match="k=5 .* memory bank size 4"):
        index.search(np.zeros((1, 2), np.float32), k=5)
    with pytest.raises(ValueError, match="empty"):
        NearestNeighbours(np.zeros((0, 2), np.float32))
    with pytest.raises(ValueError, match="2-D"):
        NearestNeighbours(np.zeros(4, np.float32))
    with pytest.raises(ValueError, match="dims"):
        index.search(np.zeros((1, 3), np.float32))
    with pytest.raises(ValueError, match="unknown kNN backend"):
        NearestNeighbours(np.zeros((4, 2), np.float32), backend="annoy")


def test_image_score_is_the_max_patch_score():
    grid = torch.zeros(2, 28, 28)
    grid[0, 3, 4], grid[1, 27, 0] = 5.0, 2.5
    np.testing.assert_array_equal(image_scores(grid), [5.0, 2.5])


def test_eq7_reweighting_by_hand():
    # Bank: m* = 0 at distance 1 from the worst test patch; b = 2 neighbours of m*.
    bank = np.array([[0.0, 0.0], [0.0, 0.5], [0.0, -3.0], [10.0, 10.0]], np.float32)
    patches = np.array([[1.0, 0.0], [0.1, 0.0]], np.float32)  # one image, two patches
    index = NearestNeighbours(bank)
    score = reweighted_image_scores(index, patches, batch_size=1, b=2)
    d = np.array([1.0, np.hypot(1.0, 0.5), np.hypot(1.0, 3.0)])  # to m*, and its 2 neighbours
    weight = 1 - np.exp(d[0]) / np.exp(d).sum()
    np.testing.assert_allclose(score, [weight * 1.0], rtol=1e-6)
    assert 2 / 3 <= weight < 1  # the weight always lies in [b/(b+1), 1)


def test_eq7_crowded_neighbourhood_gets_a_lower_weight_than_an_isolated_one():
    test_patch = np.array([[2.0, 0.0]], np.float32)
    crowded = np.array([[0.0, 0.0], [0.0, 0.1], [0.0, -0.1]], np.float32)
    isolated = np.array([[0.0, 0.0], [-5.0, 0.0], [-6.0, 0.0]], np.float32)
    s_crowded = reweighted_image_scores(NearestNeighbours(crowded), test_patch, 1, b=2)
    s_isolated = reweighted_image_scores(NearestNeighbours(isolated), test_patch, 1, b=2)
    assert s_crowded[0] < s_isolated[0] < 2.0
    with pytest.raises(ValueError, match="b=3"):
        reweighted_image_scores(NearestNeighbours(crowded), test_patch, 1, b=3)


def test_eq7_from_a_search_already_done_equals_searching_again():
    rng = np.random.default_rng(11)
    bank, features = rng.normal(size=(200, 8)).astype(np.float32), rng.normal(size=(3 * 16, 8)).astype(np.float32)
    index = NearestNeighbours(bank)
    again = reweighted_image_scores(index, features, 3, b=4)
    np.testing.assert_array_equal(reweighted_image_scores(index, features, 3, b=4, nearest=index.search(features, 3)),
                                  again)
    assert again.shape == (3,) and (again > 0).all()
