"""A small MVTec-layout data set from real photographs, with synthetic defects.

Run from the repository root (scikit-image is a dev dependency)::

    .venv/bin/python benchmarks/make_photo_set.py [--output data/photos] [--n-train 24]

The textures are real photographs that ship inside the scikit-image wheel
(``skimage.data``: nothing is downloaded). The *defects are synthetic*:
pasted patches of another photograph, local blur, a brightness or colour
shift, and scratches, each with its exact pixel mask. So the set measures
PatchCore on real textures, not on real defects.

==============  ===========================  =========  ==========  ====================
category        photograph (skimage.data)    colour     size (HxW)  pasted patches from
==============  ===========================  =========  ==========  ====================
grass           ``grass()``                  grayscale  192 x 192   ``gravel()``
brick           ``brick()``                  grayscale  192 x 192   ``gravel()``
ihc             ``immunohistochemistry()``   RGB        192 x 192   ``coffee()``
gravel_wide     ``gravel()``                 grayscale  160 x 400   ``grass()``
hubble_wide     ``hubble_deep_field()``      RGB        250 x 600   ``immunohistochemistry()``
gravel_tall     ``gravel()``                 grayscale  400 x 160   ``grass()``
hubble_tall     ``hubble_deep_field()``      RGB        600 x 250   ``immunohistochemistry()``
==============  ===========================  =========  ==========  ====================

Train and test crops come from disjoint parts of each photograph (training:
the top rows, test: the bottom rows; for brick, whose rows shrink in
perspective, and for the tall crops, the left and right columns), so no test pixel was seen in
training.
Defects are placed anywhere in the image, also near its ends, where a centre
crop cuts them away: that is what the whole-image mode is for. Grayscale
photographs are saved as 8-bit grayscale PNGs (``pcnotes.data.mvtec.load_rgb``
replicates them to three channels).

Everything is drawn from one seed; the output is written to a temporary
sibling folder and renamed into place at the end, and an existing folder is
replaced only if it holds an earlier output of this script (its
``photo_set.json``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUTPUT = ROOT / "data" / "photos"
MARKER = "photo_set.json"
VERSION = 1
DEFECTS = ("paste", "blur", "shift", "scratch")


@dataclass(frozen=True)
class Category:
    photo: str  # a function of skimage.data
    donor: str  # where pasted patches come from
    height: int
    width: int
    train_part: float  # training crops: this fraction of the rows (or columns), from the top (left)
    split_axis: int = 0  # 0: split the rows, 1: the columns (brick: its rows shrink in perspective)


CATEGORIES = {
    "grass": Category("grass", "gravel", 192, 192, 0.62),
    "brick": Category("brick", "gravel", 192, 192, 0.62, split_axis=1),
    "ihc": Category("immunohistochemistry", "coffee", 192, 192, 0.62),
    "gravel_wide": Category("gravel", "grass", 160, 400, 0.62),
    "hubble_wide": Category("hubble_deep_field", "immunohistochemistry", 250, 600, 0.64),
    "gravel_tall": Category("gravel", "grass", 400, 160, 0.62, split_axis=1),
    "hubble_tall": Category("hubble_deep_field", "immunohistochemistry", 600, 250, 0.64, split_axis=1),
}


def photograph(name: str) -> np.ndarray:
    """A photograph bundled with scikit-image: ``(H, W)`` or ``(H, W, 3)`` uint8."""
    import skimage.data

    image = np.asarray(getattr(skimage.data, name)())
    return image[..., :3] if image.ndim == 3 else image


def crop_positions(rng, photo_shape, category: Category, split: str, count: int) -> list[tuple[int, int]]:
    """Top-left corners of ``count`` crops, from the training part or the test part."""
    size = (category.height, category.width)
    ranges = [[0, photo_shape[0] - size[0]], [0, photo_shape[1] - size[1]]]
    axis = category.split_axis
    boundary = int(photo_shape[axis] * category.train_part)
    if split == "train":
        ranges[axis][1] = boundary - size[axis]
    else:
        ranges[axis][0] = boundary
    if any(high < low for low, high in ranges):
        raise ValueError(f"{category.photo} {photo_shape[:2]} is too small for {split} crops of "
                         f"{size[0]}x{size[1]}")
    ys, xs = (rng.integers(low, high + 1, count) for low, high in ranges)
    return list(zip(ys.tolist(), xs.tolist()))


def blob_mask(rng, shape: tuple[int, int], radius: float) -> np.ndarray:
    """An irregular blob (a star-shaped wobbly ellipse) fully inside the image: ``(H, W)`` bool."""
    height, width = shape
    cy = rng.uniform(radius * 1.5, height - radius * 1.5)
    cx = rng.uniform(radius * 1.5, width - radius * 1.5)
    y, x = np.mgrid[:height, :width].astype(np.float64)
    angle = np.arctan2(y - cy, x - cx)
    stretch, turn = rng.uniform(0.6, 1.0), rng.uniform(0, np.pi)
    wobble = 1 + sum(rng.uniform(0, 0.18) * np.cos(k * angle + rng.uniform(0, 2 * np.pi)) for k in (2, 3, 5))
    u = (x - cx) * np.cos(turn) + (y - cy) * np.sin(turn)
    v = -(x - cx) * np.sin(turn) + (y - cy) * np.cos(turn)
    return np.hypot(u, v / stretch) < radius * wobble


def scratch_mask(rng, shape: tuple[int, int], length: float) -> np.ndarray:
    """A thin polyline of two or three segments: ``(H, W)`` bool (the pixels PIL draws)."""
    height, width = shape
    canvas = Image.new("L", (width, height), 0)
    point = np.array([rng.uniform(0.1, 0.9) * width, rng.uniform(0.1, 0.9) * height])
    direction = rng.uniform(0, 2 * np.pi)
    points = [tuple(point)]
    for _ in range(rng.integers(2, 4)):
        direction += rng.uniform(-0.5, 0.5)
        step = length / 3 * np.array([np.cos(direction), np.sin(direction)])
        point = np.clip(point + step, [2, 2], [width - 3, height - 3])
        points.append(tuple(point))
    ImageDraw.Draw(canvas).line(points, fill=255, width=int(rng.integers(2, 4)))
    return np.asarray(canvas) > 0


def add_defect(rng, image: np.ndarray, kind: str, donor: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One synthetic defect on a real crop: ``(H, W[, 3])`` uint8 -> the image and its mask ``(H, W)``."""
    shape = image.shape[:2]
    radius = rng.uniform(0.05, 0.11) * min(shape) + 4
    out = image.astype(np.float64)
    if kind == "scratch":
        mask = scratch_mask(rng, shape, length=rng.uniform(0.2, 0.35) * max(shape))
        value = rng.choice([rng.uniform(0, 40), rng.uniform(215, 255)])
        out[mask] = value
        return out.round().clip(0, 255).astype(np.uint8), mask
    mask = blob_mask(rng, shape, radius)
    if kind == "paste":
        rows, cols = np.nonzero(mask)
        box = (slice(rows.min(), rows.max() + 1), slice(cols.min(), cols.max() + 1))
        height, width = mask[box].shape
        top = rng.integers(0, donor.shape[0] - height + 1)
        left = rng.integers(0, donor.shape[1] - width + 1)
        out[box][mask[box]] = donor[top : top + height, left : left + width][mask[box]]
    elif kind == "blur":
        sigma = (rng.uniform(2.5, 4.0),) * 2 + ((0,) if image.ndim == 3 else ())
        out[mask] = ndimage.gaussian_filter(out, sigma)[mask]
    elif kind == "shift":
        if image.ndim == 3:  # a colour cast: the channels scaled and offset differently
            out[mask] = out[mask] * rng.uniform(0.55, 1.35, 3) + rng.uniform(-30, 30, 3)
        else:  # grayscale: darker or brighter, and flatter
            sign = rng.choice([-1, 1])
            out[mask] = (out[mask] - out[mask].mean()) * 0.7 + out[mask].mean() + sign * rng.uniform(35, 60)
    else:
        raise ValueError(f"unknown defect {kind!r}; choose one of {DEFECTS}")
    return out.round().clip(0, 255).astype(np.uint8), mask


def _donor_like(donor: np.ndarray, image: np.ndarray) -> np.ndarray:
    """The donor photograph in the image's colour mode (gray <-> RGB)."""
    if image.ndim == 2 and donor.ndim == 3:
        return (donor @ np.array([0.299, 0.587, 0.114])).round().astype(np.uint8)
    if image.ndim == 3 and donor.ndim == 2:
        return np.repeat(donor[..., None], 3, axis=-1)
    return donor


def _save(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode="L" if array.ndim == 2 else "RGB").save(path)


def write_category(folder: Path, name: str, n_train: int, n_test_good: int, n_per_defect: int,
                   seed: int) -> dict:
    """Write one category in the MVTec AD layout; return its summary."""
    category = CATEGORIES[name]
    photo = photograph(category.photo)
    rng = np.random.default_rng([seed, list(CATEGORIES).index(name)])
    donor = _donor_like(photograph(category.donor), photo)

    def crop(y, x):
        return photo[y : y + category.height, x : x + category.width]

    for i, (y, x) in enumerate(crop_positions(rng, photo.shape, category, "train", n_train)):
        _save(folder / name / "train" / "good" / f"{i:03d}.png", crop(y, x))
    test = crop_positions(rng, photo.shape, category, "test", n_test_good + n_per_defect * len(DEFECTS))
    for i, (y, x) in enumerate(test[:n_test_good]):
        _save(folder / name / "test" / "good" / f"{i:03d}.png", crop(y, x))
    areas = []
    for d, kind in enumerate(DEFECTS):
        for i in range(n_per_defect):
            y, x = test[n_test_good + d * n_per_defect + i]
            image, mask = add_defect(rng, crop(y, x), kind, donor)
            _save(folder / name / "test" / kind / f"{i:03d}.png", image)
            _save(folder / name / "ground_truth" / kind / f"{i:03d}_mask.png", mask.astype(np.uint8) * 255)
            areas.append(float(mask.mean()))
    return {"photograph": f"skimage.data.{category.photo}()", "donor": f"skimage.data.{category.donor}()",
            "size_hw": [category.height, category.width], "grayscale": photo.ndim == 2,
            "n_train": n_train, "n_test_good": n_test_good, "n_test_defective": n_per_defect * len(DEFECTS),
            "defect_area_percent": [round(100 * min(areas), 2), round(100 * max(areas), 2)]}


def make_photo_set(output: Path = DEFAULT_OUTPUT, categories=None, *, n_train: int = 24,
                   n_test_good: int = 12, n_per_defect: int = 6, seed: int = 0) -> Path:
    """Write the photo set to ``output`` (replacing only an earlier photo set) and return it."""
    import skimage

    output = Path(output)
    categories = list(categories or CATEGORIES)
    unknown = sorted(set(categories) - set(CATEGORIES))
    if unknown:
        raise ValueError(f"unknown categories {unknown}; choose from {list(CATEGORIES)}")
    if output.exists() and any(output.iterdir()) and not (output / MARKER).is_file():
        raise FileExistsError(f"{output}: exists and is not a photo set (no {MARKER}); choose another --output")
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.tmp-", dir=output.parent))
    try:
        summary = {name: write_category(staging, name, n_train, n_test_good, n_per_defect, seed)
                   for name in categories}
        (staging / MARKER).write_text(json.dumps({
            "generator": "benchmarks/make_photo_set.py", "version": VERSION, "seed": seed,
            "scikit_image": skimage.__version__,
            "note": "real photographs bundled with scikit-image; the defects are synthetic",
            "categories": summary}, indent=1) + "\n")
        if output.exists():
            shutil.rmtree(output)
        staging.rename(output)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return output


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="default: data/photos (git-ignored)")
    parser.add_argument("--categories", nargs="+", default=None, choices=list(CATEGORIES))
    parser.add_argument("--n-train", type=int, default=24)
    parser.add_argument("--n-test-good", type=int, default=12)
    parser.add_argument("--n-per-defect", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    output = make_photo_set(args.output, args.categories, n_train=args.n_train,
                            n_test_good=args.n_test_good, n_per_defect=args.n_per_defect, seed=args.seed)
    for name, info in json.loads((output / MARKER).read_text())["categories"].items():
        print(f"{name:12s} {info['photograph']:32s} {'gray' if info['grayscale'] else 'RGB ':4s} "
              f"{info['size_hw'][0]}x{info['size_hw'][1]}  train {info['n_train']}, test "
              f"{info['n_test_good']} good + {info['n_test_defective']} defective "
              f"(defects {info['defect_area_percent'][0]}-{info['defect_area_percent'][1]} % of the image)")
    print(f"wrote {output} (real photographs, synthetic defects)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
