"""Benchmark PatchCore's greedy coreset loops: reference-style vs fast.

Run from the repository root::

    .venv/bin/python benchmarks/coreset.py [--sizes 10000 47040 150000] [--ratio 0.1]

For each bank size N it times, side by side on the same 128-dimensional
features:

* the reference-style loop (``patchcore-inspection``'s arithmetic:
  ``a^2 - 2ab + b^2``, ``torch.cat`` + ``torch.min`` every step),
* the fast exact loop (numba; triangle-inequality pruning and partial sums),
  as it runs by default (big steps split over numba's threads when the
  cores are free and that is measured to pay) and limited to one thread;
  its JIT compile / cache-load time is measured separately as "warm-up",

and prints the speed-ups, how many indices agree and both coverage radii.
It also times ``greedy_coreset`` (exact variant) fast vs plain at one size.
Timings are wall-clock on whatever machine runs this; nothing is asserted.

Features: real-looking patch features, made by running MobileNetV2 (the
weights shipped in ``data/``) on procedurally generated texture images
(stripes, noise, weaves; some with blob "defects"), taking 3x3-averaged
patch features from ``features.6`` (28x28x32) and ``features.13``
(14x14x96, upsampled to 28x28), and projecting the 128 channels with a
seeded random projection.  One image gives 784 patches; images are generated
until N patches exist.  The result is cached under
``/tmp/pcnotes_benchmark_cache``.
"""

from __future__ import annotations

import argparse
import math
import os
import time
from pathlib import Path

import numba
import numpy as np
import torch
import torchvision

from pcnotes import coreset

REPO_ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = REPO_ROOT / "data" / "mobilenet_v2_imagenet_features.pt"
CACHE_DIR = Path("/tmp/pcnotes_benchmark_cache")
IMAGE_SIZE = 224
PATCHES_PER_IMAGE = 28 * 28
FEATURE_DIM = 128
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


# --------------------------------------------------------------------------
# Realistic features
# --------------------------------------------------------------------------


def _smooth_noise(rng: np.random.Generator, size: int, scale: int) -> np.ndarray:
    """Value noise: random values on a coarse grid, bilinearly upsampled, in [0, 1]."""
    coarse = torch.from_numpy(rng.random((1, 1, scale, scale), dtype=np.float32))
    fine = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)
    return fine[0, 0].clamp(0, 1).numpy()


def texture_image(rng: np.random.Generator, kind: str) -> np.ndarray:
    """One ``(224, 224, 3)`` float32 image in [0, 1] of a given texture kind."""
    size = IMAGE_SIZE
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    angle = rng.uniform(0, np.pi)
    frequency = rng.uniform(6, 30)
    u = x * np.cos(angle) + y * np.sin(angle)
    v = -x * np.sin(angle) + y * np.cos(angle)
    if kind == "stripes":
        gray = 0.5 + 0.5 * np.sin(2 * np.pi * frequency * u + rng.uniform(0, 6.3))
    elif kind == "weave":
        gray = 0.5 + 0.25 * (np.sin(2 * np.pi * frequency * u) + np.sin(2 * np.pi * frequency * v))
        gray *= 0.7 + 0.3 * (np.sign(np.sin(np.pi * frequency * u) * np.sin(np.pi * frequency * v)) > 0)
    else:  # "noise": a grainy, cloudy surface
        gray = 0.6 * _smooth_noise(rng, size, int(rng.integers(4, 16))) + 0.4 * _smooth_noise(rng, size, 48)
    gray = gray + rng.normal(0, 0.04, gray.shape)
    tint = rng.uniform(0.4, 1.0, size=3)
    offset = rng.uniform(0.0, 0.3, size=3)
    image = gray[..., None] * tint + offset
    if rng.random() < 0.3:  # a few images get blob-shaped "defects"
        for _ in range(int(rng.integers(1, 4))):
            cy, cx = rng.uniform(0.1, 0.9, 2)
            radius = rng.uniform(0.02, 0.08)
            blob = np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * radius**2))
            image = image * (1 - blob[..., None]) + blob[..., None] * rng.uniform(0, 1, 3)
    return np.clip(image, 0, 1).astype(np.float32)


def _feature_extractor() -> tuple[torch.nn.Module, dict]:
    model = torchvision.models.mobilenet_v2()
    state = torch.load(WEIGHTS, weights_only=True)
    model.load_state_dict(state, strict=False)  # only classifier.* is missing
    model.eval()
    captured: dict = {}
    for name in ("6", "13"):
        model.features[int(name)].register_forward_hook(
            lambda _module, _inputs, output, name=name: captured.__setitem__(name, output)
        )
    return model, captured


@torch.no_grad()
def make_features(num_points: int, seed: int = 0, batch: int = 16) -> np.ndarray:
    """``(num_points, 128)`` float32 patch features of synthetic texture images."""
    rng = np.random.default_rng(seed)
    model, captured = _feature_extractor()
    projection = torch.empty(FEATURE_DIM, 32 + 96)
    torch.nn.init.kaiming_uniform_(projection, a=math.sqrt(5), generator=torch.Generator().manual_seed(seed))
    kinds = ("stripes", "weave", "noise")
    num_images = -(-num_points // PATCHES_PER_IMAGE)
    chunks = []
    for first in range(0, num_images, batch):
        images = [texture_image(rng, kinds[(first + i) % 3]) for i in range(min(batch, num_images - first))]
        pixels = (np.stack(images) - IMAGENET_MEAN) / IMAGENET_STD
        model.features(torch.from_numpy(pixels).permute(0, 3, 1, 2).contiguous())
        mid = captured["6"]  # (B, 32, 28, 28)
        deep = torch.nn.functional.interpolate(captured["13"], size=mid.shape[-2:], mode="bilinear", align_corners=False)
        patches = torch.cat([mid, deep], dim=1)  # (B, 128, 28, 28)
        patches = torch.nn.functional.avg_pool2d(patches, 3, stride=1, padding=1)  # 3x3 neighbourhood
        chunks.append(patches.permute(0, 2, 3, 1).reshape(-1, patches.shape[1]) @ projection.T)
    return torch.cat(chunks)[:num_points].numpy().astype(np.float32)


def load_features(num_points: int, seed: int = 0) -> np.ndarray:
    """:func:`make_features`, cached as ``.npy`` under :data:`CACHE_DIR`."""
    path = CACHE_DIR / f"mobilenet_textures_n{num_points}_seed{seed}.npy"
    if path.exists():
        return np.load(path)
    features = make_features(num_points, seed)
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    np.save(path, features)
    return features


# --------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------


def timed(function, *args, **kwargs):
    """(result, wall-clock seconds) of one call."""
    start = time.perf_counter()
    result = function(*args, **kwargs)
    return result, time.perf_counter() - start


def warm_up() -> float:
    """Seconds for the first fast call in this process: numba compile, or loading its cache."""
    tiny = np.random.default_rng(0).normal(size=(256, FEATURE_DIM)).astype(np.float32)
    _, seconds = timed(coreset.approximate_greedy_coreset, tiny, 0.1, method="fast", progress=False)
    return seconds


def fast_loop_work(features: np.ndarray, ratio: float) -> dict:
    """Work counters of the fast loop (an extra, untimed run)."""
    points = coreset._rotate_to_principal_axes(torch.from_numpy(features))
    start = np.random.default_rng(0).choice(len(features), 10, replace=False)
    keys = (coreset._mean_distance_to_start_points(points, start) ** 2).float().numpy()
    stats: dict = {}
    bar = coreset._progress_bar(False, 0, "")
    coreset._fast_loop(coreset._pad_to_lanes(points.numpy()), keys, coreset.coreset_size(len(features), ratio), bar, stats)
    return stats


def print_table(header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]
    line = "  ".join("-" * w for w in widths)
    print("  ".join(h.rjust(w) for h, w in zip(header, widths)))
    print(line)
    for row in rows:
        print("  ".join(str(cell).rjust(w) for cell, w in zip(row, widths)))


def fast_on_one_thread(features: np.ndarray, ratio: float):
    """approximate_greedy_coreset(method="fast") with numba limited to one thread."""
    threads = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        return timed(coreset.approximate_greedy_coreset, features, ratio, method="fast", progress=False)
    finally:
        numba.set_num_threads(threads)


def benchmark_approximate(sizes: list[int], ratio: float, skip_reference_above: int) -> None:
    header = [
        "N", "M", "reference s", "fast s", "speed-up", "1 thread s", "speed-up", "same idx", "same set",
        "first diff", "radius ref", "radius fast", "rel diff", "exact dist",
    ]  # fmt: skip
    rows = []
    notes = []
    for n in sizes:
        features = load_features(n)
        fast, fast_s = timed(coreset.approximate_greedy_coreset, features, ratio, method="fast", progress=False)
        one_thread, one_thread_s = fast_on_one_thread(features, ratio)
        assert np.array_equal(fast, one_thread)
        radius_fast = coreset.coverage_radius(features, fast)
        work = fast_loop_work(features, ratio)
        exact_share = f"{100 * work['exact_distances'] / work['plain_distances']:.1f} %"
        notes.append(
            f"N={n}: the fast loop walked {work['rows_walked'] / work['plain_distances']:.1%} of the N * M rows; "
            f"{work['steps_in_threaded_chunks'] / len(fast):.0%} of its steps were in chunks that split big steps "
            "over threads (untimed run)"
        )
        if n > skip_reference_above:
            notes.append(f"N={n}: reference loop skipped (N > --skip-reference-above {skip_reference_above})")
            rows.append([
                n, len(fast), "skipped", f"{fast_s:.2f}", "-", f"{one_thread_s:.2f}", "-", "-", "-", "-", "-",
                f"{radius_fast:.5f}", "-", exact_share,
            ])  # fmt: skip
            continue
        reference, reference_s = timed(coreset.approximate_greedy_coreset, features, ratio, method="reference", progress=False)
        radius_reference = coreset.coverage_radius(features, reference)
        differ = np.flatnonzero(fast != reference)
        rows.append([
            n, len(fast), f"{reference_s:.2f}", f"{fast_s:.2f}", f"{reference_s / fast_s:.1f}x",
            f"{one_thread_s:.2f}", f"{reference_s / one_thread_s:.1f}x", f"{np.mean(fast == reference) * 100:.2f} %",
            f"{len(np.intersect1d(fast, reference)) / len(fast) * 100:.2f} %",
            str(differ[0]) if len(differ) else "none", f"{radius_reference:.5f}", f"{radius_fast:.5f}",
            f"{abs(radius_fast - radius_reference) / radius_reference:.0e}", exact_share,
        ])  # fmt: skip
    print()
    print(f"approximate_greedy_coreset, ratio {ratio}, d' = {FEATURE_DIM} (times include projection checks,")
    print("start distances and, for fast, the principal-axes rotation; numba warm-up excluded)")
    print_table(header, rows)
    print("same idx = equal at the same position; same set = shared indices, in any order; first diff = the")
    print("first step that picked differently (near-ties that the two arithmetics round differently);")
    print("rel diff = relative difference of the coverage radii; exact dist = exact distances computed by")
    print("the fast loop, as a share of the N * M of a plain loop")
    for note in notes:
        print(note)


def benchmark_greedy(n: int, ratio: float) -> None:
    features = load_features(n)
    points = torch.from_numpy(features)
    _, init_s = timed(coreset._distance_matrix_row_norms, points)
    fast, fast_s = timed(coreset.greedy_coreset, features, ratio, method="fast", progress=False)
    plain, plain_s = timed(coreset.greedy_coreset, features, ratio, method="plain", progress=False)
    print()
    print(f"greedy_coreset (exact variant), N = {n}, ratio {ratio}; both include the streamed")
    print(f"N x N row-norm start ({init_s:.2f} s of it, never more than {coreset._BLOCK_ENTRIES * 4 >> 20} MiB at once)")
    print_table(
        ["N", "M", "plain s", "fast s", "speed-up", "identical"],
        [[n, len(fast), f"{plain_s:.2f}", f"{fast_s:.2f}", f"{plain_s / fast_s:.1f}x", str(bool(np.array_equal(fast, plain)))]],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10000, 47040, 150000])
    parser.add_argument("--ratio", type=float, default=0.1)
    parser.add_argument("--skip-reference-above", type=int, default=50000, help="skip the slow reference loop above this N")
    parser.add_argument("--greedy-size", type=int, default=10000, help="N for greedy_coreset fast vs plain (0: skip)")
    args = parser.parse_args()

    print(f"numba {numba.__version__}, {numba.get_num_threads()} threads; torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"load average before: {' '.join(f'{x:.1f}' for x in os.getloadavg())}  (other processes share these cores)")
    for n in sorted(set(args.sizes + ([args.greedy_size] if args.greedy_size else []))):
        load_features(n)  # build the cache first, outside every timing
    print(f"numba warm-up (first call: JIT compile, or loading the on-disk cache): {warm_up():.2f} s")
    benchmark_approximate(args.sizes, args.ratio, args.skip_reference_above)
    if args.greedy_size:
        benchmark_greedy(args.greedy_size, args.ratio)
    print(f"\nload average after: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
