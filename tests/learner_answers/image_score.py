import numpy as np


def image_score(features: np.ndarray, bank: np.ndarray, batch_size: int) -> np.ndarray:
    # squared distances as a² - 2ab + b², in float64, clamped at 0 before the square root
    a = np.asarray(features, dtype=np.float64)
    b = np.asarray(bank, dtype=np.float64)
    squared = (a * a).sum(axis=1)[:, None] - 2.0 * a @ b.T + (b * b).sum(axis=1)[None, :]
    nearest = np.sqrt(np.clip(squared.min(axis=1), 0.0, None))
    return np.array([image.max() for image in np.split(nearest, batch_size)])
