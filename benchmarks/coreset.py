"""Benchmark PatchCore's greedy coreset loop on easy and hard features.

Run from the repository root::

    .venv/bin/python benchmarks/coreset.py [--features textures embedded grass gravel brick]
        [--n 47040] [--ratio 0.1] [--old fb87a8c] [--rounds 3] [--output benchmarks/results/coreset.json]

For each kind of features it times, side by side in one process, the same
``approximate_greedy_coreset`` selection made by

* ``reference``: the loop as written in patchcore-inspection (``loop="reference"``),
* ``brute force``: the fast module's flat pass computing every distance on
  all of numba's threads (``coreset_fast.fast_loop(way="brute")``),
* ``fast``: the default (``loop="fast"``), and the same limited to one thread,
* ``old fast``: the default loop of commit ``--old`` (loaded from git), if given,
* the fast loop forced to each of its ways (flat, flat32, prune) for the whole
  run, to show what its chooser costs against the best way in hindsight,

next to a **lower bound**: ``M`` argmaxes over ``N`` float32 keys, the one
thing every step of any such loop has to do.  It checks that all of these but
the reference select the same indices, and how far the differently
rounded reference agrees.  The results are written to ``--output`` (JSON),
and the report, printed and written beside it (``.md``), is what
benchmarks/README.md and the notebooks quote.  Timings are
wall-clock on whatever machine runs this: every loop runs once per round,
in turn, and the median of ``--rounds`` rounds (default 3) counts; nothing
is asserted.

The features (``N`` x 1024, then the sampler's seeded projection to 128-d):

* ``textures``: this script's earlier features, MobileNetV2 ``features.6``
  and ``features.13`` of procedurally rendered stripes, weaves and noise,
  3x3-averaged, 128 channels (already 128-d);
* ``embedded``: the embedded data set's normal images (:mod:`pcnotes.data.synth`:
  fabric, wood, tiles) through PatchCore's default pipeline
  (``PatchCore().extract``);
* ``grass``, ``gravel``, ``brick``: random 224 x 224 crops of the real
  texture photographs bundled with scikit-image (``skimage.data``; in the
  wheel, nothing is downloaded) through the same pipeline.  Grass and
  gravel have a high intrinsic dimension: the triangle inequality prunes
  little there, which is the hard case.

Features are cached under ``/tmp/pcnotes_benchmark_cache``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numba
import numpy as np
import torch
import torchvision

from pcnotes.fast import coreset as coreset_fast
from pcnotes.stages import s5_coreset as coreset
from pcnotes.util.folders import write_file

REPO_ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = REPO_ROOT / "data" / "mobilenet_v2_imagenet_features.pt"
CACHE_DIR = Path("/tmp/pcnotes_benchmark_cache")
RESULTS = REPO_ROOT / "benchmarks" / "results" / "coreset.json"
PATCHES_PER_IMAGE = 28 * 28
FEATURE_DIM = 128
FEATURES = {
    "textures": "rendered textures, MobileNetV2 layers 6 + 13 (this benchmark's earlier features)",
    "embedded": "the embedded data set's normal images, PatchCore's default features",
    "grass": "crops of skimage.data.grass(), a real photograph, PatchCore's default features",
    "gravel": "crops of skimage.data.gravel(), a real photograph, PatchCore's default features",
    "brick": "crops of skimage.data.brick(), a real photograph, PatchCore's default features",
}


# --------------------------------------------------------------------------
# Features
# --------------------------------------------------------------------------


def _smooth_noise(rng: np.random.Generator, size: int, scale: int) -> np.ndarray:
    coarse = torch.from_numpy(rng.random((1, 1, scale, scale), dtype=np.float32))
    fine = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)
    return fine[0, 0].clamp(0, 1).numpy()


def texture_image(rng: np.random.Generator, kind: str, size: int = 224) -> np.ndarray:
    """One ``(224, 224, 3)`` float32 image in [0, 1]: stripes, a weave or cloudy noise, some with blobs."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    angle, frequency = rng.uniform(0, np.pi), rng.uniform(6, 30)
    u = x * np.cos(angle) + y * np.sin(angle)
    v = -x * np.sin(angle) + y * np.cos(angle)
    if kind == "stripes":
        gray = 0.5 + 0.5 * np.sin(2 * np.pi * frequency * u + rng.uniform(0, 6.3))
    elif kind == "weave":
        gray = 0.5 + 0.25 * (np.sin(2 * np.pi * frequency * u) + np.sin(2 * np.pi * frequency * v))
        gray *= 0.7 + 0.3 * (np.sign(np.sin(np.pi * frequency * u) * np.sin(np.pi * frequency * v)) > 0)
    else:
        gray = 0.6 * _smooth_noise(rng, size, int(rng.integers(4, 16))) + 0.4 * _smooth_noise(rng, size, 48)
    gray = gray + rng.normal(0, 0.04, gray.shape)
    image = gray[..., None] * rng.uniform(0.4, 1.0, size=3) + rng.uniform(0.0, 0.3, size=3)
    if rng.random() < 0.3:
        for _ in range(int(rng.integers(1, 4))):
            cy, cx = rng.uniform(0.1, 0.9, 2)
            radius = rng.uniform(0.02, 0.08)
            blob = np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * radius**2))
            image = image * (1 - blob[..., None]) + blob[..., None] * rng.uniform(0, 1, 3)
    return np.clip(image, 0, 1).astype(np.float32)


@torch.no_grad()
def texture_features(num_points: int, seed: int = 0, batch: int = 16) -> np.ndarray:
    """``(num_points, 128)``: 3x3-averaged MobileNetV2 features.6 + features.13 of rendered textures."""
    rng = np.random.default_rng(seed)
    model = torchvision.models.mobilenet_v2()
    model.load_state_dict(torch.load(WEIGHTS, weights_only=True), strict=False)  # only classifier.* is missing
    model.eval()
    captured: dict = {}
    for name in ("6", "13"):
        model.features[int(name)].register_forward_hook(lambda _m, _i, out, name=name: captured.__setitem__(name, out))
    projection = torch.empty(FEATURE_DIM, 32 + 96)
    torch.nn.init.kaiming_uniform_(projection, a=math.sqrt(5), generator=torch.Generator().manual_seed(seed))
    mean, std = np.array([0.485, 0.456, 0.406], np.float32), np.array([0.229, 0.224, 0.225], np.float32)
    num_images = -(-num_points // PATCHES_PER_IMAGE)
    chunks = []
    for first in range(0, num_images, batch):
        kinds = [("stripes", "weave", "noise")[(first + i) % 3] for i in range(min(batch, num_images - first))]
        pixels = (np.stack([texture_image(rng, kind) for kind in kinds]) - mean) / std
        model.features(torch.from_numpy(pixels).permute(0, 3, 1, 2).contiguous())
        deep = torch.nn.functional.interpolate(captured["13"], size=(28, 28), mode="bilinear", align_corners=False)
        patches = torch.nn.functional.avg_pool2d(torch.cat([captured["6"], deep], dim=1), 3, stride=1, padding=1)
        chunks.append(patches.permute(0, 2, 3, 1).reshape(-1, patches.shape[1]) @ projection.T)
    return torch.cat(chunks)[:num_points].numpy().astype(np.float32)


def _images(kind: str, count: int, seed: int = 0) -> torch.Tensor:
    """``(count, 3, 224, 224)`` normalised images: synthetic normal images, or crops of a photograph."""
    from PIL import Image

    from pcnotes.data.mvtec import image_transform

    rng = np.random.default_rng(seed)
    if kind == "embedded":
        from pcnotes.data import synth

        transform = image_transform()
        categories = synth.CATEGORIES
        images = [Image.fromarray(synth.render_texture(categories[i % len(categories)], rng)) for i in range(count)]
    else:
        import skimage.data  # the photographs ship inside the scikit-image wheel

        transform = image_transform(resize=224, crop=224)
        photo = getattr(skimage.data, kind)()  # (512, 512) uint8 grayscale
        corners = rng.integers(0, np.array(photo.shape[:2]) - 224 + 1, size=(count, 2))
        images = [Image.fromarray(photo[y : y + 224, x : x + 224]).convert("RGB") for y, x in corners]
    return torch.stack([transform(image) for image in images])


def pipeline_features(kind: str, num_points: int) -> np.ndarray:
    """``(num_points, 128)``: PatchCore's default patch features of ``kind``'s images, projected to 128-d."""
    from pcnotes.model import PatchCore

    features, _ = PatchCore().extract(_images(kind, -(-num_points // PATCHES_PER_IMAGE)))
    projected = coreset.random_projection(torch.from_numpy(features[:num_points]), FEATURE_DIM, seed=0)
    return projected.numpy().astype(np.float32)


def load_features(kind: str, num_points: int) -> np.ndarray:
    """The features of one kind, cached as ``.npy`` under :data:`CACHE_DIR`."""
    path = CACHE_DIR / f"{kind}_n{num_points}.npy"
    if path.exists():
        return np.load(path)
    features = texture_features(num_points) if kind == "textures" else pipeline_features(kind, num_points)
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


def timed_rounds(loops: dict, rounds: int) -> tuple[dict, dict]:
    """Run every loop once per round, in turn: (result of each loop, median seconds of each loop).

    ``loops`` maps a name to a function of no arguments.  Taking turns
    spreads the drift of the machine's speed (other jobs, the neighbours
    of a virtual machine) over all loops alike, instead of charging one
    loop with a slow minute.
    """
    results, seconds = {}, {name: [] for name in loops}
    for _ in range(rounds):
        for name, loop in loops.items():
            results[name], elapsed = timed(loop)
            seconds[name].append(elapsed)
    return results, {name: float(np.median(values)) for name, values in seconds.items()}


@numba.njit  # (no on-disk cache: this script is also imported under another name by its test)
def _argmaxes(keys, count):
    """``count`` argmaxes over ``keys``, each followed by the write that retires the winner."""
    for _ in range(count):
        keys[np.argmax(keys)] = -1.0


def lower_bound_seconds(features: np.ndarray, num_select: int) -> float:
    """Seconds for M argmaxes over N float32 keys: less than any greedy loop can take."""
    keys = np.random.default_rng(0).random(len(features), dtype=np.float32)
    _argmaxes(keys[:8].copy(), 1)  # compile (or load) first
    return min(timed(_argmaxes, keys.copy(), num_select)[1] for _ in range(3))


FORCED_WAYS = ("flat", "flat32", "prune")  # the fast loop's ways, each forced for a whole run


def forced(features: np.ndarray, ratio: float, way: str, stats: dict | None = None) -> np.ndarray:
    """The same selection as ``approximate_greedy_coreset``, the fast loop run with one ``way``.

    ``"brute"`` computes every distance (all threads); ``"flat"``, ``"flat32"``
    and ``"prune"`` run one way for the whole run, which shows what the
    chooser (``"auto"``, the default) costs against the best way in hindsight.
    ``stats``, if a dict, receives the loop's work counters.
    """
    points = torch.from_numpy(features)
    start = np.random.default_rng(0).choice(len(points), 10, replace=False)
    start_distances = coreset._mean_distance_to_start_points(points, start)
    num_select = coreset.coreset_size(len(points), ratio)
    return coreset_fast.select(points, start_distances, num_select, way=way, stats=stats)


def fast_work(features: np.ndarray, ratio: float) -> dict:
    """Work counters of the default loop (an extra, untimed run)."""
    stats: dict = {}
    forced(features, ratio, "auto", stats)
    return stats


def on_one_thread(function, *args, **kwargs):
    """``function(*args, **kwargs)`` with numba limited to one thread."""
    threads = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        return function(*args, **kwargs)
    finally:
        numba.set_num_threads(threads)


def load_old_coreset(commit: str):
    """``pcnotes/stages/s5_coreset.py`` as it was at ``commit``, imported from a copy under :data:`CACHE_DIR`."""
    source = subprocess.run(
        ["git", "show", f"{commit}:pcnotes/coreset.py"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    ).stdout
    path = CACHE_DIR / f"coreset_{commit}.py"
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    if not path.exists() or path.read_text() != source:
        path.write_text(source)
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module  # numba's on-disk cache finds the module by this name
    spec.loader.exec_module(module)
    return module


def warm_up(old) -> float:
    """Seconds for the first calls in this process: numba compiles, or loads its cache.

    Both the one-thread and the threaded versions of every way, so the bank
    is larger than ``coreset_fast._PARALLEL_MIN_POINTS``.
    """
    rng = np.random.default_rng(0)
    tiny = rng.normal(size=(256, FEATURE_DIM)).astype(np.float32)
    large = rng.normal(size=(coreset_fast._PARALLEL_MIN_POINTS + 1, FEATURE_DIM)).astype(np.float32)
    start = time.perf_counter()
    for bank in (tiny, large):
        for way in coreset_fast.WAYS:
            points = torch.from_numpy(bank)
            coreset_fast.select(points, torch.ones(len(bank), dtype=torch.float64), 20, way=way)
        if old is not None:
            old.approximate_greedy_coreset(bank, 20 / len(bank), progress=False)
    return time.perf_counter() - start


def benchmark(kind: str, num_points: int, ratio: float, old, skip_reference: bool, rounds: int) -> dict:
    """Time every loop on one kind of features (``rounds`` turns each); the row of the results table."""
    features = load_features(kind, num_points)
    fast_loop = coreset.approximate_greedy_coreset
    loops = {
        "fast": lambda: fast_loop(features, ratio, progress=False),
        "fast_one_thread": lambda: on_one_thread(fast_loop, features, ratio, progress=False),
        "brute_force": lambda: forced(features, ratio, "brute"),
    }
    for way in FORCED_WAYS:
        loops[f"way_{way}"] = lambda way=way: forced(features, ratio, way)
    if old is not None:
        loops["old_fast"] = lambda: old.approximate_greedy_coreset(features, ratio, progress=False)
    if not skip_reference:
        loops["reference"] = lambda: fast_loop(features, ratio, loop="reference", progress=False)
    selected, seconds = timed_rounds(loops, rounds)
    fast = selected["fast"]
    same = {name.removeprefix("fast_"): bool(np.array_equal(selected[name], fast))
            for name in ("fast_one_thread", "brute_force", "old_fast") if name in selected}  # fmt: skip
    same["forced_ways"] = all(np.array_equal(selected[f"way_{way}"], fast) for way in FORCED_WAYS)
    ways = {way: seconds.pop(f"way_{way}") for way in FORCED_WAYS}
    seconds["lower_bound"] = lower_bound_seconds(features, len(fast))
    row = {"features": kind, "description": FEATURES[kind], "n": len(features), "m": len(fast)}
    if not skip_reference:
        reference = selected["reference"]
        radius_fast, radius_reference = coreset.coverage_radius(features, fast), coreset.coverage_radius(features, reference)
        row["reference_agreement"] = {
            "same_position": float(np.mean(fast == reference)),
            "same_set": len(np.intersect1d(fast, reference)) / len(fast),
            "radius_relative_difference": abs(radius_fast - radius_reference) / radius_reference,
        }
        row["speed_up_over_reference"] = {
            name: seconds["reference"] / value for name, value in seconds.items() if name != "reference"
        }
    work = fast_work(features, ratio)
    row.update(seconds=seconds, same_indices_as_fast=same, fast_work=work, forced_ways_seconds=ways,
               auto_over_best_way=seconds["fast"] / min(ways.values()))
    return row


def benchmark_greedy(kind: str, num_points: int, ratio: float) -> dict:
    """``greedy_coreset`` (exact variant), fast against plain: both include the streamed N x N start."""
    features = load_features(kind, num_points)
    fast, fast_s = timed(coreset.greedy_coreset, features, ratio, progress=False)
    plain, plain_s = timed(coreset.greedy_coreset, features, ratio, loop="plain", progress=False)
    return {"features": kind, "n": num_points, "m": len(fast), "seconds": {"plain": plain_s, "fast": fast_s},
            "identical": bool(np.array_equal(fast, plain))}  # fmt: skip


# --------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------

COLUMNS = ["reference", "old_fast", "brute_force", "fast", "fast_one_thread", "lower_bound"]


def table(results: dict) -> str:
    """A markdown table of the results: seconds, and speed-ups over the reference in brackets."""
    present = [c for c in COLUMNS if any(c in row["seconds"] for row in results["rows"])]
    lines = ["| features | N | M | " + " | ".join(c.replace("_", " ") + " s" for c in present) + " | same indices |",
             "| --- " * (4 + len(present)) + "|"]  # fmt: skip
    for row in results["rows"]:
        cells = []
        for column in present:
            value = row["seconds"].get(column)
            speed_up = row.get("speed_up_over_reference", {}).get(column)
            cells.append("-" if value is None else f"{value:.2f}" + (f" ({speed_up:.1f}x)" if speed_up else ""))
        same = "yes" if all(row["same_indices_as_fast"].values()) else "NO"
        lines.append(f"| {row['features']} | {row['n']} | {row['m']} | " + " | ".join(cells) + f" | {same} |")
    return "\n".join(lines)


def ways_table(results: dict) -> str:
    """A markdown table: each way of the fast loop forced for a whole run, against the chooser."""
    lines = ["| features | " + " | ".join(f"{way} s" for way in FORCED_WAYS)
             + " | auto s | auto / best way | auto's steps: flat, flat32, prune | distances in full |",
             "| --- " * (5 + len(FORCED_WAYS)) + "|"]  # fmt: skip
    for row in results["rows"]:
        ways = " | ".join(f"{row['forced_ways_seconds'][way]:.2f}" for way in FORCED_WAYS)
        work = row["fast_work"]
        steps = f"{work['flat_steps'] - work['flat32_steps']}, {work['flat32_steps']}, {work['prune_steps']}"
        lines.append(f"| {row['features']} | {ways} | {row['seconds']['fast']:.2f} | {row['auto_over_best_way']:.2f} | "
                     f"{steps} | {work['exact_distances'] / work['plain_distances']:.1%} |")  # fmt: skip
    return "\n".join(lines)


def report(results: dict) -> str:
    """The benchmark's report in markdown: printed, and written next to the results file (``.md``)."""
    row = results["rows"][0]
    lines = [f"`approximate_greedy_coreset(features, {results['ratio']})` at N = {row['n']:,}, M = {row['m']:,}, "
             f"d' = {FEATURE_DIM}; median of {results['rounds']} rounds; seconds, and the speed-up over the "
             "reference in brackets:", "", table(results), "",
             "The fast loop forced to one way for the whole run, against its chooser (auto), and the share "
             "of the N * M distances that auto computed in full:", "", ways_table(results)]  # fmt: skip
    if "greedy" in results:
        greedy = results["greedy"]
        lines += ["", f"`greedy_coreset` (exact start), {greedy['features']}, N = {greedy['n']:,}: plain "
                  f"{greedy['seconds']['plain']:.2f} s, fast {greedy['seconds']['fast']:.2f} s, "
                  f"identical: {'yes' if greedy['identical'] else 'NO'}."]  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--features", nargs="+", default=list(FEATURES), choices=list(FEATURES))
    parser.add_argument("--n", type=int, default=47040, help="bank size N (default: 60 images x 784 patches)")
    parser.add_argument("--ratio", type=float, default=0.1)
    parser.add_argument("--old", default=None, metavar="COMMIT", help="also time the default loop of this commit")
    parser.add_argument("--skip-reference", action="store_true", help="skip the slow reference loop")
    parser.add_argument("--greedy-n", type=int, default=10000, help="N for greedy_coreset fast vs plain (0: skip)")
    parser.add_argument("--output", type=Path, default=RESULTS, help="results file (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=3, help="runs of every loop, taking turns; the median "
                        "counts (default: %(default)s)")  # fmt: skip
    args = parser.parse_args(argv)

    for kind in args.features:
        load_features(kind, args.n)  # build the caches first, outside every timing
    old = load_old_coreset(args.old) if args.old else None
    results = {
        "command": "python benchmarks/coreset.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "numba_threads": numba.get_num_threads(), "torch_threads": torch.get_num_threads(),
                    "numba": numba.__version__, "torch": torch.__version__},
        "ratio": args.ratio,
        "rounds": args.rounds,
        "load_before": list(os.getloadavg()),
        "warm_up_seconds": warm_up(old),
        "old_commit": args.old,
    }  # fmt: skip
    results["rows"] = []
    for kind in args.features:
        results["rows"].append(benchmark(kind, args.n, args.ratio, old, args.skip_reference, args.rounds))
        seconds = ", ".join(f"{name} {value:.2f} s" for name, value in results["rows"][-1]["seconds"].items())
        print(f"{kind}: {seconds}", file=sys.stderr, flush=True)
    if args.greedy_n:
        results["greedy"] = benchmark_greedy(args.features[0], args.greedy_n, args.ratio)
    results["load_after"] = list(os.getloadavg())
    print(f"load average before {results['load_before'][0]:.2f}, after {results['load_after'][0]:.2f}; "
          f"numba {numba.get_num_threads()} threads\n")  # fmt: skip
    text = report(results)
    print(text)
    write_file(args.output, json.dumps(results, indent=1) + "\n")  # never a half-written results file
    write_file(args.output.with_suffix(".md"), text)
    print(f"written to {args.output} and {args.output.with_suffix('.md').name}")
    return results


if __name__ == "__main__":
    main()
