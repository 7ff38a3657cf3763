import numpy as np
import torch


def greedy_k_center(points: np.ndarray, m: int) -> np.ndarray:
    # the distance matrix from coordinate differences (no matrix-product shortcut), in float64
    x = torch.as_tensor(np.asarray(points, dtype=np.float64))
    distances = torch.cdist(x, x, compute_mode="donot_use_mm_for_euclid_dist").numpy()
    coverage = np.sqrt((distances**2).sum(axis=1))  # each row's norm: the most remote point goes first
    chosen = np.zeros(m, dtype=np.int64)
    for step in range(m):
        pick = int(coverage.argmax())
        chosen[step] = pick
        coverage = np.where(distances[pick] < coverage, distances[pick], coverage)
    return chosen
