import math


def coreset_size(num_points: int, ratio: float) -> int:
    kept = math.floor(num_points * ratio)
    return kept if kept >= 1 else 1
