import numpy as np


def auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    # every (defective, good) pair counted one by one: a win 1, a tie 1/2
    defective = [s for s, label in zip(scores, labels) if label]
    good = [s for s, label in zip(scores, labels) if not label]
    points = sum(1.0 if d > g else 0.5 if d == g else 0.0 for d in defective for g in good)
    return float(points / (len(defective) * len(good)))
