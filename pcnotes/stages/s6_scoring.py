"""Stage 6: nearest-neighbour scores for patches and images (eq. 6 and eq. 7).

A test patch is anomalous when it is far from everything seen in training: its
score is the distance to its nearest neighbour in the memory bank (or the mean
over its k nearest)::

    test features (B*H*W, D) --kNN to bank (M, D)--> patch scores (B*H*W,)

Two interchangeable backends find the neighbours: faiss ``IndexFlatL2`` (exact,
fast, GPU when faiss-gpu and CUDA are present) and plain torch. They agree to
1e-4. For big banks, ``approximate="hnsw"`` swaps the exact faiss index for
a graph index (:mod:`pcnotes.fast.ann`): faster, and almost always the same
neighbour; exact stays the default.

*A quirk of the reference code:* faiss returns **squared** L2 distances and
patchcore-inspection uses them as scores without a square root. The paper
uses Euclidean distances. Rankings are identical (the square is monotone), but
the heat maps' contrast and the eq. 7 weights differ. ``squared=True``
reproduces the reference; the default is the paper's Euclidean distance.

The image score is the largest patch score (eq. 6). The paper then re-weights
it (eq. 7), which the reference code skips; ``reweighted_image_scores`` adds it.
"""

from __future__ import annotations

import numpy as np
import torch

from pcnotes.fast.ann import APPROXIMATE, hnsw_index

BACKENDS = ("faiss", "torch")
INDEXES = ("exact", *APPROXIMATE)


def _as_float32(array, name: str) -> np.ndarray:
    if isinstance(array, torch.Tensor):
        array = array.detach().cpu().numpy()
    array = np.ascontiguousarray(array, dtype=np.float32)
    if array.ndim != 2:
        raise ValueError(f"{name} must be 2-D (N, D), got shape {array.shape}")
    return array


class NearestNeighbours:
    """An L2 index over a memory bank ``(M, D)``, searched in batches: exact unless ``approximate="hnsw"``.

    ``search(queries (N, D), k) -> (distances (N, k), indices (N, k))``, both
    numpy, nearest first. Distances are Euclidean unless ``squared=True``.
    """

    def __init__(self, bank, *, backend: str = "faiss", squared: bool = False, approximate: str = "exact"):
        if backend not in BACKENDS:
            raise ValueError(f"unknown kNN backend {backend!r}; choose one of {BACKENDS}")
        if approximate not in INDEXES:
            raise ValueError(f"unknown index {approximate!r}; choose one of {INDEXES}")
        if approximate != "exact" and backend != "faiss":
            raise ValueError(f"index {approximate!r} needs the faiss backend, not {backend!r}")
        self.bank = _as_float32(bank, "memory bank")
        if len(self.bank) == 0:
            raise ValueError("the memory bank is empty: fit on at least one image")
        self.backend = backend
        self.squared = squared
        if backend == "faiss":
            self.index = hnsw_index(self.bank) if approximate != "exact" else self._flat_index()
        else:
            self.bank_tensor = torch.from_numpy(self.bank)
            self.bank_sq_norms = (self.bank_tensor**2).sum(1)

    def _flat_index(self):
        """faiss ``IndexFlatL2`` over the bank (exact; on the GPU when faiss-gpu and CUDA are present)."""
        import faiss  # here, not at the top: `import pcnotes` stays light

        index = faiss.IndexFlatL2(self.bank.shape[1])
        if hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0:
            self._gpu_resources = faiss.StandardGpuResources()
            index = faiss.index_cpu_to_gpu(self._gpu_resources, 0, index)
        index.add(self.bank)
        return index

    def __len__(self) -> int:
        return len(self.bank)

    def search(self, queries, k: int = 1) -> tuple[np.ndarray, np.ndarray]:
        queries = _as_float32(queries, "queries")
        if queries.shape[1] != self.bank.shape[1]:
            raise ValueError(
                f"queries have {queries.shape[1]} dims but the bank has {self.bank.shape[1]}"
            )
        if not 1 <= k <= len(self.bank):
            raise ValueError(f"k={k} must be between 1 and the memory bank size {len(self.bank)}")
        if self.backend == "faiss":
            squared, indices = self.index.search(queries, k)
        else:
            squared, indices = self._torch_search(queries, k)
        squared = np.maximum(squared, 0.0)  # float rounding can dip just below 0
        distances = squared if self.squared else np.sqrt(squared)
        return distances.astype(np.float32), indices.astype(np.int64)

    def _torch_search(self, queries: np.ndarray, k: int, chunk: int = 4096):
        # |q - b|^2 = |q|^2 - 2 q.b + |b|^2, one matrix product per chunk of queries.
        out_d, out_i = [], []
        for start in range(0, len(queries), chunk):
            q = torch.from_numpy(queries[start : start + chunk])
            sq = (q**2).sum(1, keepdim=True) - 2 * q @ self.bank_tensor.T + self.bank_sq_norms
            values, indices = torch.topk(sq, k, dim=1, largest=False, sorted=True)
            out_d.append(values.numpy())
            out_i.append(indices.numpy())
        return np.concatenate(out_d), np.concatenate(out_i)


def patch_scores(index: NearestNeighbours, features, k: int = 1) -> np.ndarray:
    """Mean distance to the k nearest bank entries: ``(N, D) -> (N,)``."""
    distances, _ = index.search(features, k)
    return distances.mean(axis=1)


def unpatch_scores(scores, batch_size: int):
    """Give patch scores back to their images: ``(B*H*W,) -> (B, H*W)`` (numpy or torch)."""
    if scores.ndim != 1 or scores.shape[0] % batch_size:
        raise ValueError(
            f"expected (B*H*W,) scores for batch size {batch_size}, got {tuple(scores.shape)}"
        )
    return scores.reshape(batch_size, -1)


def scores_to_grid(scores, grid: tuple[int, int]):
    """Lay per-image patch scores out on the patch grid: ``(B, H*W) -> (B, H, W)`` (numpy or torch)."""
    height, width = grid
    if scores.ndim != 2 or scores.shape[1] != height * width:
        raise ValueError(f"expected (B, {height * width}) scores, got {tuple(scores.shape)}")
    return scores.reshape(scores.shape[0], height, width)


def score_grid(index: NearestNeighbours, features, batch_size: int, grid: tuple[int, int],
               k: int = 1) -> np.ndarray:
    """Patch scores laid out on each image's patch grid: ``(B*H*W, D) -> (B, H, W)``.

    The three steps of stage 6 in one place: kNN distances per patch
    (``(B*H*W,)``), given back to their images (``(B, H*W)``), laid out on the
    grid (``(B, H, W)``).
    """
    return scores_to_grid(unpatch_scores(patch_scores(index, features, k), batch_size), grid)


def image_scores(score_grid) -> np.ndarray:
    """The image score is its largest patch score: ``(B, H, W) -> (B,)``."""
    score_grid = np.asarray(score_grid)
    return score_grid.reshape(len(score_grid), -1).max(axis=1)


def reweighted_image_scores(
    index: NearestNeighbours, features, batch_size: int, b: int, nearest=None
) -> np.ndarray:
    """Eq. 7 of the paper: damp the image score when its nearest bank entry is crowded.

    For each image take the most anomalous test patch m_test* and its nearest
    bank entry m*. The weight is ``1 - softmax(d)[m*]`` over the Euclidean
    distances ``d`` from m_test* to m* and to m*'s ``b`` nearest neighbours in
    the bank. m* is the closest of them, so the weight lies in [b/(b+1), 1):
    it is lowest when m*'s neighbours are about as close to the test patch
    as m* itself (a dense, well-covered region of normal features) and
    approaches 1 when m* is isolated from them (a rare normal feature, where
    a large distance is more telling).

    ``(B*H*W, D) -> (B,)``. The raw score s* is in the index's metric
    (Euclidean, or squared with ``squared=True``). ``nearest``, the
    ``(distances, indices)`` that ``index.search(features, k)`` already
    returned, spares searching every patch a second time.

    Conventions differ on what the ``b`` neighbours are. The paper sums over
    ``N_b(m*)``, m*'s b nearest bank entries; anomalib counts m* itself among
    its b = 9. pcnotes uses ``{m*} ∪ N_b(m*)``: b + 1 entries, m* first.
    """
    if b < 1:
        raise ValueError(f"eq. 7 re-weighting needs b >= 1 neighbours, got {b}")
    if b + 1 > len(index):
        raise ValueError(f"b={b} needs a memory bank of at least {b + 1} entries, got {len(index)}")
    features = _as_float32(features, "features").reshape(batch_size, -1, index.bank.shape[1])
    distances, indices = nearest if nearest is not None else index.search(features.reshape(-1, features.shape[2]), 1)
    distances = np.asarray(distances)[:, 0].reshape(batch_size, -1)  # (B, H*W): each patch's 1-NN
    indices = np.asarray(indices)[:, 0].reshape(batch_size, -1)
    scores = np.empty(batch_size, dtype=np.float32)
    for i, patches in enumerate(features):
        worst = int(np.argmax(distances[i]))
        test_patch, m_star = patches[worst], int(indices[i, worst])
        # m*'s b nearest bank neighbours, leaving m* itself out.
        _, around = index.search(index.bank[m_star][None], b + 1)
        around = [j for j in around[0] if j != m_star][:b]
        support = index.bank[[m_star, *around]]
        d = np.sqrt(((support - test_patch) ** 2).sum(axis=1, dtype=np.float64))
        softmax = np.exp(d - d.max()) / np.exp(d - d.max()).sum()
        scores[i] = (1.0 - softmax[0]) * distances[i, worst]
    return scores
