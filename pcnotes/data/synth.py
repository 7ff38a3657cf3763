"""A small procedural anomaly-detection data set, drawn from scratch.

PatchCore needs normal images to learn from and defective images (with pixel
masks) to be evaluated on.  The real MVTec AD set is large and licensed
non-commercially, so this project ships a generator instead: every image is
drawn with numpy/scipy/PIL from a seed, nothing is downloaded or borrowed.

Three texture categories, each with four kinds of defect:

=========  ===================================================  ==========================================
category   normal texture                                        defects
=========  ===================================================  ==========================================
fabric     plain weave: interlaced warp/weft threads              hole, stain, thread, contamination
wood       growth rings bent by low-frequency noise, fibres       scratch, hole, stain, contamination
tiles      grid of glazed tiles with grout lines                  crack, chip, stain, contamination
=========  ===================================================  ==========================================

Normal images vary (random phase, small rotation, thread/tile/ring spacing,
colour and brightness, fine noise) while staying one distribution; defects
cover roughly 0.2 %-3 % of the image, MVTec-like, and always lie inside the
central 224x224 crop that the pipeline keeps.

The set is written in the MVTec AD layout (see :mod:`pcnotes.data.mvtec`)::

    <root>/<category>/train/good/000.png
    <root>/<category>/test/good/000.png
    <root>/<category>/test/<defect>/000.png
    <root>/<category>/ground_truth/<defect>/000_mask.png
    <root>/manifest.json

Every image has its own random generator, seeded from (seed, category,
folder, index), so any single image can be redrawn on its own and changing
one count does not change the other images.

Run ``python -m pcnotes.data.synth [--root R] [--seed S]`` to generate it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import zlib
from pathlib import Path, PurePosixPath
from typing import Callable, Sequence

import numpy as np
import platformdirs
from PIL import Image, ImageDraw
from scipy import ndimage

from pcnotes.util.folders import MARKER, replace_folder, write_marker
from pcnotes.util.paths import REPO_ROOT

__all__ = [
    "CATEGORIES",
    "DEFECTS",
    "GENERATOR_VERSION",
    "render_texture",
    "add_defect",
    "render_sample",
    "generate_dataset",
    "MVTEC_NAMED",
    "generate_mvtec_named",
    "default_data_root",
    "ensure_default_dataset",
    "read_manifest",
]

#: Bump when the drawing code changes, so that stale generated sets are redrawn.
GENERATOR_VERSION = 1

CATEGORIES: tuple[str, ...] = ("fabric", "wood", "tiles")

DEFECTS: dict[str, tuple[str, ...]] = {
    "fabric": ("hole", "stain", "thread", "contamination"),
    "wood": ("scratch", "hole", "stain", "contamination"),
    "tiles": ("crack", "chip", "stain", "contamination"),
}

MANIFEST_NAME = "manifest.json"

#: Defects stay at least this far from the border; the pipeline's centre
#: crop (256 -> 224) removes 16 px, the rest is a safety margin.
BORDER_MARGIN = 24


# --------------------------------------------------------------------------
# Small drawing helpers.  Images are float32 (H, W, 3) in [0, 1] internally.
# --------------------------------------------------------------------------


def _smooth_noise(rng: np.random.Generator, size: int, scale: float) -> np.ndarray:
    """Smooth random field ``(size, size)`` with unit std and features ~``scale`` px.

    A coarse grid of normals (one value every ``scale`` px) is upsampled
    bicubically: much cheaper than blurring full-resolution noise with a wide
    Gaussian.  A random sub-cell offset keeps the coarse grid from lining up
    across images.
    """
    span = size / scale  # coarse cells covered by the output
    n = int(np.ceil(span)) + 4
    coarse = rng.standard_normal((n, n)).astype(np.float32)
    ox, oy = rng.uniform(1.0, n - 1.0 - span, size=2)
    field = Image.fromarray(coarse, mode="F").resize(
        (size, size), Image.BICUBIC, box=(ox, oy, ox + span, oy + span)
    )
    field = np.asarray(field, dtype=np.float32)
    return (field - field.mean()) / (field.std() + 1e-8)


def _rotated_coords(size: int, angle_deg: float) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates ``(u, v)`` rotated by ``angle_deg`` about the image centre."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    c = (size - 1) / 2.0
    a = np.deg2rad(angle_deg)
    u = np.cos(a) * (xx - c) + np.sin(a) * (yy - c) + c
    v = -np.sin(a) * (xx - c) + np.cos(a) * (yy - c) + c
    return u, v


def _smoothstep(edge0: float, edge1: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - edge0) / (edge1 - edge0), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _jitter_colour(rng: np.random.Generator, colour: Sequence[float], amount: float) -> np.ndarray:
    return np.asarray(colour, np.float32) * (1.0 + amount * rng.standard_normal(3)).astype(np.float32)


def _finish(rng: np.random.Generator, image: np.ndarray, noise: float = 0.006) -> np.ndarray:
    """Global brightness, slow illumination falloff and fine sensor noise."""
    size = image.shape[0]
    gain = rng.uniform(0.93, 1.07)
    light = 1.0 + 0.04 * _smooth_noise(rng, size, 96.0)
    grain = noise * rng.standard_normal((size, size, 1)).astype(np.float32)
    return np.clip(image * gain * light[..., None] + grain, 0.0, 1.0)


def _to_uint8(image: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------
# Normal textures
# --------------------------------------------------------------------------


def _render_fabric(rng: np.random.Generator, size: int) -> np.ndarray:
    """Plain weave: warp (vertical) and weft (horizontal) threads alternate on top."""
    period = rng.uniform(7.0, 8.2)  # px per thread
    u, v = _rotated_coords(size, rng.uniform(-4.0, 4.0))
    # Threads are never perfectly straight: a smooth sub-pixel displacement.
    u = (u + 0.8 * _smooth_noise(rng, size, 24.0)) / period + rng.uniform(0, 2)
    v = (v + 0.8 * _smooth_noise(rng, size, 24.0)) / period + rng.uniform(0, 2)
    i, j = np.floor(u), np.floor(v)
    fu, fv = u - i, v - j

    def profile(t: np.ndarray) -> np.ndarray:
        # Rounded thread cross-section filling ~85 % of its cell; 0 in the gap.
        return np.clip(np.cos(np.pi * (t - 0.5) / 0.85), 0.0, 1.0) ** 0.6

    def bulge(t: np.ndarray) -> np.ndarray:
        # Darker where the thread dives under its neighbour.
        return 0.6 + 0.4 * np.sin(np.pi * t) ** 0.7

    # Per-thread brightness: each thread is spun slightly differently.
    warp_gain = 1.0 + 0.06 * rng.standard_normal(128).astype(np.float32)
    weft_gain = 1.0 + 0.06 * rng.standard_normal(128).astype(np.float32)
    gw = warp_gain[i.astype(np.int64) % 128]
    gf = weft_gain[j.astype(np.int64) % 128]

    warp_colour = _jitter_colour(rng, (0.24, 0.32, 0.52), 0.04)
    weft_colour = _jitter_colour(rng, (0.74, 0.72, 0.66), 0.03)
    gap_colour = 0.35 * (warp_colour + weft_colour) / 2

    warp_on_top = ((i + j) % 2 == 0)[..., None]
    warp_shade = (profile(fu) * bulge(fv) * gw)[..., None]
    weft_shade = (profile(fv) * bulge(fu) * gf)[..., None]
    top_shade = np.where(warp_on_top, warp_shade, weft_shade)
    top_colour = np.where(warp_on_top, warp_colour, weft_colour)
    image = gap_colour + (top_colour - gap_colour) * top_shade
    # Fibre fuzz: a little blurred noise.
    fuzz = ndimage.gaussian_filter(rng.standard_normal((size, size)), 0.8).astype(np.float32)
    image = image * (1.0 + 0.08 * fuzz[..., None])
    return _finish(rng, image)


def _render_wood(rng: np.random.Generator, size: int) -> np.ndarray:
    """Wood grain: growth rings (roughly horizontal stripes) bent by smooth noise."""
    u, v = _rotated_coords(size, rng.uniform(-6.0, 6.0))
    spacing = rng.uniform(10.0, 14.0)
    bend = 7.0 * _smooth_noise(rng, size, 64.0) + 1.5 * _smooth_noise(rng, size, 16.0)
    # A gentle parabola makes some images look cut slightly off-axis.
    curve = rng.uniform(-1.0, 1.0) * ((u - size / 2) / size) ** 2 * 40.0
    t = (v + bend + curve) / spacing + rng.uniform(0, 1)
    t = t - np.floor(t)
    # Early wood is light and widens slowly; late wood is a narrow dark band.
    latewood = np.exp(-(((t - 0.8) / 0.09) ** 2)) + 0.35 * t
    # Fibres: noise stretched along the grain direction (x).
    fibres = ndimage.gaussian_filter(rng.standard_normal((size, size)), (0.7, 6.0))
    fibres = (fibres / (fibres.std() + 1e-8)).astype(np.float32)
    darkness = np.clip(0.75 * latewood + 0.07 * fibres, 0.0, 1.2)[..., None]
    light = _jitter_colour(rng, (0.80, 0.60, 0.40), 0.04)
    dark = _jitter_colour(rng, (0.48, 0.30, 0.16), 0.05)
    image = light + (dark - light) * darkness
    return _finish(rng, image)


def _render_tiles(rng: np.random.Generator, size: int) -> np.ndarray:
    """Glazed square tiles with grout lines, per-tile colour and a soft bevel."""
    tile = rng.uniform(56.0, 66.0)
    grout = rng.uniform(3.5, 5.0)
    u, v = _rotated_coords(size, rng.uniform(-2.0, 2.0))
    u = u / tile + rng.uniform(0, 1)
    v = v / tile + rng.uniform(0, 1)
    i, j = np.floor(u), np.floor(v)
    # Distance (px) from the tile's edge.
    edge = np.minimum.reduce([u - i, i + 1 - u, v - j, j + 1 - v]) * tile
    in_tile = _smoothstep(grout / 2 - 0.5, grout / 2 + 0.5, edge)[..., None]
    bevel = 1.0 - 0.12 * np.exp(-(edge - grout / 2).clip(0) / 2.0)

    base = _jitter_colour(rng, (0.84, 0.82, 0.76), 0.03)
    tile_id = ((i.astype(np.int64) % 16) * 16 + (j.astype(np.int64) % 16))
    per_tile = (1.0 + 0.012 * rng.standard_normal((256, 3))).astype(np.float32)
    per_tile_gain = (1.0 + 0.03 * rng.standard_normal(256)).astype(np.float32)
    tile_colour = base * per_tile[tile_id] * per_tile_gain[tile_id][..., None]
    mottle = 0.025 * _smooth_noise(rng, size, 6.0)
    surface = tile_colour * (bevel + mottle)[..., None]

    grout_colour = _jitter_colour(rng, (0.50, 0.49, 0.46), 0.04)
    sand = ndimage.gaussian_filter(rng.standard_normal((size, size)), 0.7).astype(np.float32)
    grout_px = grout_colour * (1.0 + 0.12 * sand)[..., None]
    image = grout_px + (surface - grout_px) * in_tile
    return _finish(rng, image, noise=0.005)


_RENDERERS: dict[str, Callable[[np.random.Generator, int], np.ndarray]] = {
    "fabric": _render_fabric,
    "wood": _render_wood,
    "tiles": _render_tiles,
}


def render_texture(category: str, rng: np.random.Generator, size: int = 256) -> np.ndarray:
    """Draw one normal image of ``category``: uint8 ``(size, size, 3)``."""
    if category not in _RENDERERS:
        raise ValueError(f"unknown category {category!r}; choose from {CATEGORIES}")
    return _to_uint8(_RENDERERS[category](rng, size))


# --------------------------------------------------------------------------
# Defects.  Each returns the new float image and a float "visibility" alpha;
# the mask is where the alpha is large enough to see.
# --------------------------------------------------------------------------


def _centre(rng: np.random.Generator, size: int, radius: float) -> np.ndarray:
    """A random defect centre whose ``radius`` neighbourhood avoids the border."""
    lo = BORDER_MARGIN + radius
    hi = size - 1 - BORDER_MARGIN - radius
    return rng.uniform(lo, hi, size=2)


def _blob_distance(
    rng: np.random.Generator, size: int, radius: float, wobble: float, reach: float = 1.1
) -> np.ndarray:
    """Normalised distance ``(size, size)`` to an irregular blob: < 1 inside.

    The blob's radius varies with angle, ``r(theta) = radius * (1 + sum_k a_k
    cos(k theta + phi_k))`` with ``0 <= a_k <= wobble``, so holes and stains are
    not perfect discs.  ``reach`` is the largest normalised distance the
    caller will mark; the centre is placed so that even that stays inside the
    border margin.
    """
    extent = radius * (1 + 3 * wobble) * reach + 2
    cy, cx = _centre(rng, size, extent)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    dy, dx = yy - cy, xx - cx
    theta = np.arctan2(dy, dx)
    r = np.ones_like(theta)
    for k in (2, 3, 5):
        r += rng.uniform(0, wobble) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    return np.hypot(dy, dx) / (radius * r)


def _curve_points(
    rng: np.random.Generator, size: int, length: float, wiggle: float, step: float = 2.0
) -> np.ndarray:
    """A random smooth polyline ``(N, 2)`` of (x, y) of about ``length`` px, inside the margin."""
    n = max(int(length / step), 2)
    heading = rng.uniform(0, 2 * np.pi)
    turn = rng.normal(0, 0.02)  # steady bend
    headings = heading + np.cumsum(turn + wiggle * rng.standard_normal(n))
    pts = np.cumsum(np.stack([np.cos(headings), np.sin(headings)], 1) * step, axis=0)
    pts -= (pts.min(0) + pts.max(0)) / 2  # centre the curve on the origin
    half = (pts.max(0) - pts.min(0)) / 2
    lo = BORDER_MARGIN + half + 2
    hi = size - 1 - BORDER_MARGIN - half - 2
    return pts + rng.uniform(lo, np.maximum(hi, lo))


def _draw_lines(size: int, polylines: list[np.ndarray], width: float, supersample: int = 4) -> np.ndarray:
    """Antialiased coverage ``(size, size)`` in [0, 1] of polylines drawn ``width`` px wide."""
    canvas = Image.new("L", (size * supersample, size * supersample), 0)
    draw = ImageDraw.Draw(canvas)
    w = max(int(round(width * supersample)), 1)
    for pts in polylines:
        scaled = [(float(x), float(y)) for x, y in (pts + 0.5) * supersample]
        draw.line(scaled, fill=255, width=w, joint="curve")
    small = canvas.resize((size, size), Image.BOX)
    return np.asarray(small, np.float32) / 255.0


def _blend(image: np.ndarray, colour: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    return image * (1 - alpha[..., None]) + colour * alpha[..., None]


def _defect_scratch(rng, image, category):
    """A light, thin curved groove (fresh material exposed under the surface)."""
    size = image.shape[0]
    pts = _curve_points(rng, size, rng.uniform(70, 120), wiggle=0.03)
    alpha = _draw_lines(size, [pts], rng.uniform(2.2, 3.0))
    bright = np.clip(image * 1.3 + 0.15, 0, 1)
    return _blend(image, bright, alpha * rng.uniform(0.8, 0.95)), alpha


def _defect_crack(rng, image, category):
    """A dark, jagged line, sometimes with one branch."""
    size = image.shape[0]
    main = _curve_points(rng, size, rng.uniform(70, 120), wiggle=0.25, step=3.0)
    lines = [main]
    if rng.random() < 0.6:
        k = rng.integers(len(main) // 4, 3 * len(main) // 4)
        n = max(len(main) // 3, 3)
        heading = rng.uniform(0, 2 * np.pi)
        steps = np.stack([np.cos(heading + 0.25 * rng.standard_normal(n).cumsum()),
                          np.sin(heading + 0.25 * rng.standard_normal(n).cumsum())], 1) * 3.0
        branch = main[k] + np.cumsum(steps, 0)
        lo, hi = BORDER_MARGIN + 2, size - 1 - BORDER_MARGIN - 2
        lines.append(np.clip(branch, lo, hi))
    alpha = _draw_lines(size, lines, rng.uniform(2.0, 2.8))
    dark = image * 0.25
    return _blend(image, dark, alpha), alpha


def _defect_thread(rng, image, category):
    """A loose thread of another colour lying on the surface."""
    size = image.shape[0]
    pts = _curve_points(rng, size, rng.uniform(60, 110), wiggle=0.08)
    width = rng.uniform(2.5, 3.5)
    alpha = _draw_lines(size, [pts], width)
    # Colours that differ from both the indigo warp and the cream weft.
    palette = np.array([[0.85, 0.20, 0.15], [0.98, 0.97, 0.94], [0.95, 0.80, 0.20], [0.95, 0.50, 0.10]],
                       np.float32)
    colour = palette[rng.integers(len(palette))] * rng.uniform(0.9, 1.05)
    # Twisted-fibre look: brightness varies along the thread.
    twist = 1.0 + 0.15 * _smooth_noise(rng, size, 3.0)[..., None]
    return _blend(image, np.clip(colour * twist, 0, 1), alpha), alpha


def _defect_hole(rng, image, category):
    """A dark irregular hole with a lighter (frayed or broken) rim."""
    size = image.shape[0]
    radius = rng.uniform(6.0, 10.0)
    d = _blob_distance(rng, size, radius, wobble=0.12, reach=1.6)
    inside = _smoothstep(1.05, 0.95, d)
    rim_width = 2.5 / radius
    rim = _smoothstep(1.0 + rim_width + 0.1, 1.0 + rim_width - 0.1, d) * (1 - inside)
    depth = np.clip(1.0 - 0.5 * d, 0.3, 1.0)  # darker in the middle
    hole_colour = np.full(3, 0.06, np.float32) * (1 + 0.3 * d[..., None])
    out = _blend(image, np.clip(image * 1.25 + 0.08, 0, 1), rim * 0.8)
    out = _blend(out, hole_colour, inside * depth)
    alpha = np.maximum(inside, rim)
    return out, alpha


def _defect_chip(rng, image, category):
    """A chipped-off piece of glaze exposing the rough terracotta body below."""
    size = image.shape[0]
    radius = rng.uniform(7.0, 13.0)
    d = _blob_distance(rng, size, radius, wobble=0.25)
    inside = _smoothstep(1.05, 0.95, d)
    body = _jitter_colour(rng, (0.72, 0.45, 0.32), 0.06)
    rough = 1.0 + 0.12 * _smooth_noise(rng, size, 2.0)[..., None]
    shadow = 1.0 - 0.35 * _smoothstep(0.6, 1.0, d)[..., None]  # edge wall in shadow
    return _blend(image, np.clip(body * rough * shadow, 0, 1), inside), inside


def _defect_stain(rng, image, category):
    """A soft-edged blotch of soaked-in colour; the mask is where it is clearly visible.

    A liquid stain tints the surface and also flattens its fine structure (the
    soaked fibres or pores scatter less light), so the stained colour is a
    tinted mix of the image and a blurred copy of it.
    """
    size = image.shape[0]
    radius = rng.uniform(12.0, 26.0)
    d = _blob_distance(rng, size, radius, wobble=0.2, reach=1.45)
    d = d + 0.15 * np.clip(_smooth_noise(rng, size, 5.0), -2, 2)  # ragged edge, bounded
    strength = rng.uniform(0.7, 0.9)
    alpha = _smoothstep(1.1, 0.7, d) * strength
    tints = np.array([[0.60, 0.42, 0.22], [0.40, 0.40, 0.42], [0.90, 0.50, 0.22], [0.45, 0.30, 0.40]],
                     np.float32)
    tint = tints[rng.integers(len(tints))]
    flattened = 0.4 * image + 0.6 * ndimage.gaussian_filter(image, (2.0, 2.0, 0))
    stained = np.clip(flattened * tint * 1.1, 0, 1)
    out = _blend(image, stained, alpha)
    return out, alpha / strength


def _defect_contamination(rng, image, category):
    """A small irregular patch of a foreign texture (another category's surface)."""
    size = image.shape[0]
    others = [c for c in CATEGORIES if c != category]
    other = others[rng.integers(len(others))]
    patch = _RENDERERS[other](rng, size)
    radius = rng.uniform(9.0, 15.0)
    d = _blob_distance(rng, size, radius, wobble=0.3, reach=1.3)
    alpha = _smoothstep(1.05, 0.9, d)
    shadow = 1.0 - 0.25 * _smoothstep(1.3, 0.95, d) * (1 - alpha)  # cast shadow just around it
    out = _blend(image * shadow[..., None], patch, alpha)
    return out, alpha


_DEFECT_FUNCS = {
    "scratch": _defect_scratch,
    "crack": _defect_crack,
    "thread": _defect_thread,
    "hole": _defect_hole,
    "chip": _defect_chip,
    "stain": _defect_stain,
    "contamination": _defect_contamination,
}


def add_defect(
    image: np.ndarray, defect: str, rng: np.random.Generator, *, category: str | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Paint one ``defect`` onto ``image`` (uint8 ``(H, W, 3)``).

    Returns the new image (uint8 ``(H, W, 3)``) and its mask (uint8
    ``(H, W)``, 0/255).  ``category`` only matters for ``contamination``,
    whose foreign patch is drawn from a *different* category.
    """
    if defect not in _DEFECT_FUNCS:
        raise ValueError(f"unknown defect {defect!r}; choose from {sorted(_DEFECT_FUNCS)}")
    img = np.asarray(image, np.float32) / 255.0
    out, alpha = _DEFECT_FUNCS[defect](rng, img, category)
    mask = (alpha > 0.5).astype(np.uint8) * 255
    return _to_uint8(out), mask


# --------------------------------------------------------------------------
# Writing the data set
# --------------------------------------------------------------------------


def _rng_for(seed: int, category: str, folder: str, index: int) -> np.random.Generator:
    """Independent generator per image; crc32 keeps the key stable across runs and orderings."""
    key = [seed, zlib.crc32(category.encode()), zlib.crc32(folder.encode()), index]
    return np.random.default_rng(key)


def render_sample(
    category: str, folder: str, index: int, *, seed: int = 0, size: int = 256
) -> tuple[np.ndarray, np.ndarray | None]:
    """Redraw one image of the data set exactly as :func:`generate_dataset` does.

    ``folder`` is ``"train/good"``, ``"test/good"`` or ``"test/<defect>"``.
    Returns ``(image uint8 (size, size, 3), mask uint8 (size, size) or None)``.
    """
    rng = _rng_for(seed, category, folder, index)
    image = render_texture(category, rng, size)
    kind = folder.split("/")[-1]
    if kind == "good":
        return image, None
    return add_defect(image, kind, rng, category=category)


def _save_png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # Level 3: the noise-like texture compresses no better at 6-9, only slower.
    Image.fromarray(array).save(path, format="PNG", compress_level=3)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _plan(categories: Sequence[str], n_train: int, n_test_good: int, n_test_per_defect: int):
    """Every (category, folder, count) to draw, in a fixed order."""
    for category in categories:
        yield category, "train/good", n_train
        yield category, "test/good", n_test_good
        for defect in DEFECTS[category]:
            yield category, f"test/{defect}", n_test_per_defect


def _write_into(
    target: Path,
    categories: Sequence[str],
    seed: int,
    counts: tuple[int, int, int],
    size: int,
    progress: Callable[[int, int], None] | None,
) -> dict:
    """Draw every image into ``target`` (an empty folder); return the manifest dict."""
    plan = list(_plan(categories, *counts))
    total = sum(n for _, _, n in plan)
    done = 0
    for category, folder, n in plan:
        for index in range(n):
            image, mask = render_sample(category, folder, index, seed=seed, size=size)
            name = f"{index:03d}"
            _save_png(target / category / folder / f"{name}.png", image)
            if mask is not None:
                defect = folder.split("/")[1]
                _save_png(target / category / "ground_truth" / defect / f"{name}_mask.png", mask)
            done += 1
            if progress is not None:
                progress(done, total)
    files = sorted(p.relative_to(target).as_posix() for p in target.rglob("*.png"))
    hashes = {rel: _sha256(target / rel) for rel in files}
    listing = "".join(f"{h}  {rel}\n" for rel, h in hashes.items())
    return {
        "generator": "pcnotes.synth",
        "version": GENERATOR_VERSION,
        "seed": seed,
        "size": size,
        "categories": {
            c: {folder: n for cat, folder, n in plan if cat == c} for c in categories
        },
        "n_files": len(files),
        "sha256": hashlib.sha256(listing.encode()).hexdigest(),
        "files": hashes,
    }


def read_manifest(root: str | Path) -> dict | None:
    """The generator manifest of ``root``, or ``None`` if absent or unreadable."""
    path = Path(root) / MANIFEST_NAME
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict) or manifest.get("generator") != "pcnotes.synth":
        return None
    return manifest


def _adopt_older_set(root: Path) -> None:
    """Give a set drawn before the folder marker existed the marker its manifest proves.

    The manifest lists every image the generator wrote, so the marker lists
    those, their folders and the manifest; anything else in ``root`` still
    makes :func:`pcnotes.util.folders.replace_folder` refuse it.
    """
    manifest = read_manifest(root)
    if manifest is None or os.path.lexists(root / MARKER) or not isinstance(manifest.get("files"), dict):
        return
    written = {MANIFEST_NAME}
    for rel in manifest["files"]:
        written.add(rel)
        written.update(parent.as_posix() for parent in PurePosixPath(rel).parents if parent.name)
    write_marker(root, "dataset", files=written)


def generate_dataset(
    root: str | Path,
    categories: Sequence[str] | None = None,
    *,
    seed: int = 0,
    n_train: int = 48,
    n_test_good: int = 12,
    n_test_per_defect: int = 6,
    size: int = 256,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Draw the data set and write it to ``root`` in the MVTec AD layout.

    Everything is written through :func:`pcnotes.util.folders.replace_folder`:
    into a staging sibling that becomes ``root`` only when complete, with
    ``manifest.json`` (seed, generator version, counts and the sha256 of
    every file) written last, so an interrupted run leaves no half-written
    ``root``.  An existing generated set at ``root`` is replaced (kept as it
    is when identical); any other non-empty folder is left alone
    (:class:`~pcnotes.util.folders.UnsafeTargetError`, before anything is drawn).
    ``progress(done, total)`` is called after each image.  Returns ``root``.
    """
    root = Path(root).resolve()
    categories = tuple(CATEGORIES if categories is None else categories)
    unknown = [c for c in categories if c not in CATEGORIES]
    if unknown:
        raise ValueError(f"unknown categories {unknown}; choose from {CATEGORIES}")
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if size < 2 * BORDER_MARGIN + 64:
        raise ValueError(f"size must be at least {2 * BORDER_MARGIN + 64}, got {size}")
    _adopt_older_set(root)
    # replace_folder refuses a folder that is not an earlier generated set
    # before anything is drawn, and installs the new set only once complete.
    with replace_folder(root, "dataset") as staging:
        counts = (n_train, n_test_good, n_test_per_defect)
        manifest = _write_into(staging, categories, int(seed), counts, size, progress)
        (staging / MANIFEST_NAME).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return root


# --------------------------------------------------------------------------
# A tiny stand-in with MVTec AD's own names
# --------------------------------------------------------------------------

#: ``generate_mvtec_named``'s categories: MVTec AD's name -> (how the images are
#: stored, the texture drawn, {MVTec defect name: the defect drawn}).
MVTEC_NAMED: dict[str, tuple[str, str, dict[str, str]]] = {
    "bottle": ("RGB 300x200", "wood", {"broken_large": "hole", "contamination": "contamination"}),
    "tile": ("L 256x256", "tiles", {"crack": "crack", "oil": "stain"}),
}


def _draw_mvtec_named(
    category: str, folder: str, index: int, seed: int
) -> tuple[np.ndarray, np.ndarray | None]:
    """One image of :func:`generate_mvtec_named` and its mask (uint8, 0/255) or None.

    ``bottle``: RGB ``(200, 300, 3)``.  The texture is drawn at 300x300 and cut
    to 200 rows; the defect is painted into the middle 200x200, which the
    pipeline's resize-and-centre-crop keeps.  ``tile``: grayscale ``(256, 256)``.
    """
    _, texture, defects = MVTEC_NAMED[category]
    rng = _rng_for(seed, category, folder, index)
    kind = folder.split("/")[-1]
    if category == "bottle":
        image = render_texture(texture, rng, 300)[50:250]
        if kind == "good":
            return image, None
        mask = np.zeros(image.shape[:2], np.uint8)
        image[:, 50:250], mask[:, 50:250] = add_defect(
            image[:, 50:250], defects[kind], rng, category=texture
        )
        return image, mask
    image, mask = render_texture(texture, rng, 256), None
    if kind != "good":
        image, mask = add_defect(image, defects[kind], rng, category=texture)
    return np.asarray(Image.fromarray(image).convert("L")), mask


def generate_mvtec_named(
    root: str | Path,
    *,
    seed: int = 0,
    n_train: int = 16,
    n_test_good: int = 4,
    n_test_per_defect: int = 3,
) -> Path:
    """Write a small data set that looks like MVTec AD from outside, to ``root``.

    Its categories and defect folders carry MVTec AD's names (see
    :data:`MVTEC_NAMED`): ``bottle`` with ``broken_large`` and
    ``contamination``, ``tile`` with ``crack`` and ``oil``.  Like the real set
    it mixes image formats: ``bottle`` is RGB and not square (300x200),
    ``tile`` is grayscale.  Files are ``000.png``, ``001.png``, ... and masks
    ``ground_truth/<defect>/<name>_mask.png``.  There is deliberately no
    ``manifest.json``, so :func:`ensure_default_dataset` treats the folder as
    outside data and never redraws it.  The defaults make 52 small images, for
    tests that run the notebooks on "real" data.

    Everything is written through :func:`pcnotes.util.folders.replace_folder`, so
    ``root`` must be missing, empty or an earlier generated set
    (:class:`~pcnotes.util.folders.UnsafeTargetError` otherwise).  Returns ``root``.
    """
    root = Path(root).resolve()
    with replace_folder(root, "dataset") as staging:
        for category, (_, _, defects) in MVTEC_NAMED.items():
            plan = [("train/good", n_train), ("test/good", n_test_good)]
            plan += [(f"test/{defect}", n_test_per_defect) for defect in defects]
            for folder, count in plan:
                for index in range(count):
                    image, mask = _draw_mvtec_named(category, folder, index, seed)
                    _save_png(staging / category / folder / f"{index:03d}.png", image)
                    if mask is not None:
                        defect = folder.split("/")[1]
                        _save_png(staging / category / "ground_truth" / defect / f"{index:03d}_mask.png", mask)
    return root


def default_data_root() -> Path:
    """Where the embedded data set lives, never inside the installed package.

    ``$PCNOTES_DATA`` if set; in a clone ``<repo>/data/synthetic``; otherwise
    ``synthetic/`` in the user's data folder (``platformdirs.user_data_dir``:
    ``~/.local/share/pcnotes`` on Linux, ``%LOCALAPPDATA%\\pcnotes`` on
    Windows, ``~/Library/Application Support/pcnotes`` on macOS).
    """
    env = os.environ.get("PCNOTES_DATA")
    if env:
        return Path(env).expanduser()
    if REPO_ROOT is not None:
        return REPO_ROOT / "data" / "synthetic"
    return Path(platformdirs.user_data_dir("pcnotes", appauthor=False)) / "synthetic"


def _is_complete(manifest: dict | None, seed: int) -> bool:
    return (
        manifest is not None
        and manifest.get("version") == GENERATOR_VERSION
        and manifest.get("seed") == seed
        and set(CATEGORIES) <= set(manifest.get("categories", {}))
    )


def ensure_default_dataset(
    root: str | Path | None = None,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Return the root of the generated data set, drawing it first if needed.

    ``root`` defaults to :func:`default_data_root`.  Nothing is redrawn when
    its ``manifest.json`` shows a complete set from this generator version
    and ``seed``; a set from another version or seed is redrawn in place.  A
    folder holding data in the MVTec layout but no manifest (for example the
    real MVTec AD, via ``PCNOTES_DATA``) is returned untouched.
    """
    root = Path(root) if root is not None else default_data_root()
    manifest = read_manifest(root)
    if _is_complete(manifest, seed):
        return root
    if manifest is None and root.is_dir() and any(root.iterdir()):
        from pcnotes.data.mvtec import list_categories  # local: keep synth importable alone

        if list_categories(root):
            return root
    return generate_dataset(root, seed=seed, progress=progress)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pcnotes.data.synth",
        description="Generate the procedural anomaly-detection data set (MVTec AD layout).",
    )
    parser.add_argument("--root", type=Path, default=None,
                        help="output folder (default: $PCNOTES_DATA or <repo>/data/synthetic)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--force", action="store_true",
                        help="redraw even if a complete set is already there")
    args = parser.parse_args(argv)
    root = args.root if args.root is not None else default_data_root()
    if args.force:
        root = generate_dataset(root, seed=args.seed)
    else:
        root = ensure_default_dataset(root, seed=args.seed)
    manifest = read_manifest(root)
    print(root)
    if manifest is None:
        print("(existing data without a generator manifest; left untouched)")
        return 0
    for category, folders in manifest["categories"].items():
        order = sorted(folders, key=lambda f: (f != "train/good", f != "test/good", f))
        parts = ", ".join(f"{folder} {folders[folder]}" for folder in order)
        print(f"  {category}: {parts}")
    print(f"  {manifest['n_files']} files, seed {manifest['seed']}, sha256 {manifest['sha256'][:16]}…")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
