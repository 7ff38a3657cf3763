import numpy as np
from scipy import ndimage


def pro(masks: np.ndarray, maps: np.ndarray, threshold: float) -> float:
    # each image labelled 8-connected; ndimage.mean of the detected pixels per region
    corners_too = ndimage.generate_binary_structure(2, 2)
    overlaps = []
    for mask, amap in zip(masks, maps):
        regions, count = ndimage.label(mask, structure=corners_too)
        if count:
            overlaps.extend(ndimage.mean(amap >= threshold, labels=regions, index=np.arange(1, count + 1)))
    return float(np.mean(overlaps))
