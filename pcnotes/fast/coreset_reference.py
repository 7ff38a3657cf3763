"""The greedy coreset loop as ``patchcore-inspection`` writes it, kept for comparisons.

``loop="reference"`` of :mod:`pcnotes.stages.s5_coreset` runs it; the tests and
``benchmarks/coreset.py`` measure the other loops against it.  Its distances
are ``sqrt(a.a - 2 a.b + b.b)`` in float32, clamped at 0: cheap, but the
subtraction cancels for nearby points, so it rounds differently from
:func:`pcnotes.stages.s5_coreset.greedy_k_center`; the two agree at more than 99 % of
the positions, with the same coverage radius (``tests/test_coreset.py``).
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["batchwise_distances", "greedy_loop"]


def batchwise_distances(matrix_a: torch.Tensor, matrix_b: torch.Tensor) -> torch.Tensor:
    """``(N, d), (M, d) -> (N, M)`` Euclidean distances, written as in the reference."""
    a_times_a = matrix_a.unsqueeze(1).bmm(matrix_a.unsqueeze(2)).reshape(-1, 1)
    b_times_b = matrix_b.unsqueeze(1).bmm(matrix_b.unsqueeze(2)).reshape(1, -1)
    return (-2 * matrix_a.mm(matrix_b.T) + a_times_a + b_times_b).clamp(0, None).sqrt()


def greedy_loop(points: torch.Tensor, start_distances: torch.Tensor, num_select: int, progress_bar) -> np.ndarray:
    """``(N, d)`` points, ``(N,)`` start distances -> ``(num_select,)`` int64: one distance column per step."""
    anchor = start_distances.to(device=points.device, dtype=points.dtype).reshape(-1, 1)
    selected = []
    with torch.no_grad():
        for _ in range(num_select):
            select_idx = torch.argmax(anchor).item()
            selected.append(select_idx)
            new_distances = batchwise_distances(points, points[select_idx : select_idx + 1])
            anchor = torch.min(torch.cat([anchor, new_distances], dim=-1), dim=1).values.reshape(-1, 1)
            progress_bar.update(1)
    return np.array(selected, dtype=np.int64)
