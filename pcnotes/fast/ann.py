"""An approximate nearest-neighbour index for big memory banks (faiss HNSW).

Exact search (:class:`pcnotes.stages.s6_scoring.NearestNeighbours`, faiss
``IndexFlatL2``) compares every test patch with every bank entry: its cost grows
with the bank. A hierarchical navigable small-world graph (HNSW, Malkov and
Yashunin 2018) visits only a few hundred entries per query and returns the true
nearest neighbour almost always; when it misses, it returns a slightly farther
entry, so a patch score can only come out slightly *higher* than exact.

``benchmarks/ann.py`` measures its recall@1, the AUROC change and the
speed-up against exact search, and the bank size from which it pays off with
its build counted (``benchmarks/results/ann.md``: about 20,000 entries for a
test set of 100 images at 224 x 224).
"""

from __future__ import annotations

import numpy as np

#: Approximate indexes by name; "exact" (the default) is the stage's flat index.
APPROXIMATE = ("hnsw",)

#: Graph degree and search breadth: faiss's usual values for recall@1 near 0.99.
HNSW_NEIGHBOURS = 32
HNSW_EF_CONSTRUCTION = 80
HNSW_EF_SEARCH = 64


def hnsw_index(bank: np.ndarray):
    """A faiss HNSW index over ``bank (M, D)`` float32; ``search`` gives squared L2 like IndexFlatL2."""
    import faiss  # here, not at the top: `import pcnotes` stays light

    index = faiss.IndexHNSWFlat(bank.shape[1], HNSW_NEIGHBOURS)
    index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
    index.hnsw.efSearch = HNSW_EF_SEARCH
    index.add(bank)
    return index


def recall_at_1(exact_indices: np.ndarray, approximate_indices: np.ndarray) -> float:
    """Share of queries whose approximate nearest neighbour is the exact one: ``(N, k), (N, k) -> float``."""
    return float(np.mean(exact_indices[:, 0] == approximate_indices[:, 0]))
