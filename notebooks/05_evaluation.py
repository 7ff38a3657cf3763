# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 05 · Evaluation: how good is it, and where does it fail?
#
# **15 minutes** · previous: [04 · Scoring and heat maps](04_scoring_and_heatmaps.ipynb) ·
# next: [06 · Coreset explorer](06_coreset_explorer.ipynb)
#
# **Learning goals.** After this notebook you can
#
# 1. compute image AUROC by counting pairs, and the PRO of one threshold;
# 2. say what image AUROC, pixel AUROC and AUPRO each reward;
# 3. compare patch features and backbone weights on every category, and say what the data shows;
# 4. find the images the model gets most wrong, and choose options for your own photographs.

# %% [markdown]
# ## Three metrics, three questions
#
# * **Image AUROC**: the probability that a random defective image outscores a random good one
#   (1 perfect, 0.5 chance).
# * **Pixel AUROC**: the same over **pixels**, mask as label, map as score. Every pixel counts
#   once, so large defects dominate, and good pixels are so many that it sits near 1.
# * **AUPRO**: every connected defect region counts once. At a threshold t a region's overlap is
#   the fraction of its pixels with map ≥ t, and PRO(t) is the mean over regions. It is plotted
#   against the false-positive rate on good pixels up to FPR = 0.3 and the area divided by 0.3.

# %%
# Colab, Binder or any Python without pcnotes: install it first (a no-op where pcnotes is installed).
import importlib
import importlib.util
import subprocess
import sys

if importlib.util.find_spec("pcnotes") is None:
    SOURCE = "git+https://github.com/pcnotes/pcnotes"  # the repository: pcnotes.util.paths.REPOSITORY
    print(f"pcnotes is not installed in this Python: installing it from {SOURCE} ...")
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", f"pcnotes @ {SOURCE}"], check=True)
    importlib.invalidate_caches()

# %%
# %matplotlib inline
# JPEG: photos of textures stay small in the .ipynb
# %config InlineBackend.figure_formats = ["jpeg"]
import json

import matplotlib.pyplot as plt
import numpy as np
import torch
from scipy import ndimage

from pcnotes import (
    PatchCore,
    PatchCoreConfig,
    course,
    display_path,
    ensure_default_dataset,
    list_categories,
    load_split,
    read_manifest,
    results_dir,
    stack,
)
from pcnotes.app.plots import add_colorbar, draw_mask_contour, overlay_heatmap, shared_scale, show_image
from pcnotes.stages import (
    compute_metrics,
    coreset_size,
    embed,
    label_regions,
    pooled_concat,
    pro_curve,
    roc_curve_points,
)

SEED = 0
torch.manual_seed(SEED)
plt.rcParams["figure.dpi"] = 80
SCORE_LABEL = "anomaly score (Euclidean distance in feature space)"

# %% [markdown]
# ## The backbone runs once per image
#
# A small, fast configuration: 16 training images per category, the whole test set. Each image
# goes once through the backbone with ImageNet weights and once with seeded random ones; every
# experiment reuses these feature maps. On all training images: `python -m pcnotes evaluate`.

# %%
# NBVAL_CHECK_OUTPUT
root = ensure_default_dataset(seed=SEED)  # $PCNOTES_DATA when it is set
EMBEDDED = read_manifest(root) is not None  # the generated set: claims about it are asserted
config = PatchCoreConfig(seed=SEED)  # the default: mobilenet_v2, ImageNet, pooled_concat
categories = list_categories(root)
NUM_TRAIN = 16
extractors = {weights: PatchCore(config, weights=weights).extractor for weights in ("imagenet", "random")}


@torch.no_grad()
def feature_maps(extractor, images: torch.Tensor) -> dict[str, torch.Tensor]:
    """``(N, 3, H, W)`` -> ``{layer: (N, C, h, w)}``, in batches of 8."""
    batches = [extractor(images[i : i + 8]) for i in range(0, len(images), 8)]
    return {layer: torch.cat([batch[layer] for batch in batches]) for layer in batches[0]}


data = {}
for category in categories:
    train, test = load_split(root, category, "train", config), load_split(root, category, "test", config)
    train_images = torch.stack([train[i]["image"] for i in range(min(NUM_TRAIN, len(train)))])
    test_images, masks = stack(test)
    data[category] = {"test": test, "images": test_images, "masks": masks, "labels": np.asarray(test.labels),
                      "maps": {w: (feature_maps(e, train_images), feature_maps(e, test_images))
                               for w, e in extractors.items()}}
    shapes = ", ".join(f"{layer} {tuple(fmap.shape[1:])}" for layer, fmap in data[category]["maps"]["imagenet"][1].items())
    print(f"{category}: train {len(train_images)}, test {len(test)} ({int(data[category]['labels'].sum())} defective); {shapes}")

# %% [markdown]
# From feature maps to metrics: the stages of notebooks 02–04, with a 10 % greedy coreset.
# `fit_features` and `score_features` are PatchCore's seam below the images: they take patch
# features `(N·H·W, D)` and their grid, so the backbone's maps are reused for every experiment.

# %%
def patch_features(maps: dict, patch_feature: str) -> tuple[np.ndarray, tuple[int, int]]:
    """``{layer: (N, C, h, w)}`` -> ``(N*H*W, D)`` and the grid ``(H, W)``."""
    features, grid = pooled_concat(maps) if patch_feature == "pooled_concat" else embed(maps)
    return features.numpy(), grid


def evaluate(category: str, weights: str = "imagenet", patch_feature: str = config.patch_feature) -> dict:
    """Fit on the train feature maps, score the test set: scores (N,), maps (N, H, W), metrics."""
    d = data[category]
    train_maps, test_maps = d["maps"][weights]
    train_features, grid = patch_features(train_maps, patch_feature)
    test_features, _ = patch_features(test_maps, patch_feature)
    model = PatchCore(config, patch_feature=patch_feature).fit_features(train_features, grid)
    scores, maps = model.score_features(test_features, grid, size=tuple(d["images"].shape[-2:]))
    return {"scores": scores, "maps": maps, "bank": model.memory_bank.shape,
            "metrics": compute_metrics(d["labels"], scores, d["masks"], maps)}


# %% [markdown]
# ## Every category, default configuration

# %%
results = {(category, "imagenet", config.patch_feature): evaluate(category) for category in categories}
default = {category: results[category, "imagenet", config.patch_feature] for category in categories}


def print_row(name: str, m: dict) -> None:
    print(f"{name:38s} {m['image_auroc']:11.3f} {m['pixel_auroc']:11.3f} {m['aupro']:7.3f}")


print(f"{'category, memory bank':38s} {'image AUROC':>11s} {'pixel AUROC':>11s} {'AUPRO':>7s}")
for category, result in default.items():
    print_row(f"{category}, bank {result['bank']}", result["metrics"])
for category, result in default.items():
    m = result["metrics"]
    assert not EMBEDDED or (m["image_auroc"] > 0.9 and m["pixel_auroc"] > 0.95 and m["aupro"] > 0.85), (category, m)

# %% [markdown]
# ## Exercise: AUROC by counting pairs
#
# Write `auroc(labels, scores)`: over all (defective, good) pairs of images, the fraction in
# which the defective one scores higher. A tie counts 1/2. No threshold is needed.

# %% tags=["solution"]
def auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    """``labels (N,)`` 0/1 (1 = defective), ``scores (N,)`` -> AUROC, a float.

    Count the (defective, good) pairs where the defective image scores higher, a tie as 1/2,
    and divide by the number of such pairs.
    """
    labels = np.asarray(labels).astype(bool)
    scores = np.asarray(scores, dtype=np.float64)
    difference = scores[labels][:, None] - scores[~labels][None, :]  # (defective, good)
    return float(((difference > 0).sum() + 0.5 * (difference == 0).sum()) / difference.size)


# %%
# NBVAL_CHECK_OUTPUT
auroc = course.adopt("auroc", auroc, course.check_auroc(auroc))

# %% [markdown]
# ## ROC curves
#
# The pixel curves hug the left edge, yet a few percent of FPR is thousands of falsely flagged
# pixels: a pixel AUROC near 1 says less than it seems.

# %%
fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
for category, result in default.items():
    d, m = data[category], result["metrics"]
    axes[0].plot(*roc_curve_points(d["labels"], result["scores"]), label=f"{category} ({m['image_auroc']:.3f})")
    axes[1].plot(*roc_curve_points(d["masks"].ravel(), result["maps"].ravel()),
                 label=f"{category} ({m['pixel_auroc']:.3f})")
for ax, title in zip(axes, ("image-level ROC", "pixel-level ROC")):
    ax.plot([0, 1], [0, 1], "k:", lw=1)
    ax.set(xlabel="false-positive rate", ylabel="true-positive rate", title=title)
    ax.legend(fontsize=8, title="AUROC", loc="lower right")
fig.tight_layout()

# %% [markdown]
# ## PRO: every region counts once
#
# `label_regions` finds the 8-connected defect regions, as MVTec AD's evaluation does:

# %%
for category in categories:
    regions, count = label_regions(data[category]["masks"])
    sizes = np.bincount(regions.ravel())[1:]
    print(f"{category}: {count} defect regions of {sizes.min()} to {sizes.max()} pixels (median {int(np.median(sizes))})")

# %% [markdown]
# ## Exercise (fast finishers): the PRO of one threshold
#
# Write `pro(masks, maps, threshold)`: label each image's mask on its own, 8-connected
# (`ndimage.label(mask, structure=np.ones((3, 3)))`); for every region, the fraction of its pixels
# with map ≥ threshold; return the mean over all regions of all images.

# %% tags=["solution"]
def pro(masks: np.ndarray, maps: np.ndarray, threshold: float) -> float:
    """``masks (N, H, W)`` bool, ``maps (N, H, W)``, a threshold -> PRO(threshold), a float.

    The mean over every 8-connected defect region of every image of the fraction of the
    region's pixels whose map value is >= threshold.
    """
    overlaps = []
    for mask, amap in zip(masks, maps):
        regions, count = ndimage.label(mask, structure=np.ones((3, 3)))
        overlaps += [float((amap[regions == region] >= threshold).mean()) for region in range(1, count + 1)]
    return float(np.mean(overlaps))


# %%
# NBVAL_CHECK_OUTPUT
pro = course.adopt("pro", pro, course.check_pro(pro))

# %% [markdown]
# PRO(t) over all thresholds, against the FPR on good pixels:

# %%
fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
for category, result in default.items():
    fpr, overlap = pro_curve(data[category]["masks"], result["maps"])
    for ax in axes:
        ax.plot(fpr, overlap, label=f"{category} (AUPRO {result['metrics']['aupro']:.3f})")
for ax, right, title in zip(axes, (1.0, 0.1), ("per-region overlap", "zoom: FPR up to 0.1")):
    ax.axvline(0.3, color="k", ls="--", lw=1)
    ax.set(xlim=(0, right), xlabel="false-positive rate (good pixels)", ylabel="PRO: mean overlap per region",
           title=title)
axes[0].text(0.31, 0.05, "FPR = 0.3:\narea counted\nto the left", fontsize=8)
axes[0].legend(fontsize=8, loc="lower right")
fig.tight_layout()

# %% [markdown]
# A region is fully found only when all its pixels pass the threshold; small or faint regions
# get there only at thresholds that already flag good pixels. That makes AUPRO the strictest of
# the three.
#
# ## Two patch features
#
# From notebook 02: `mean_mapped` (the reference's mean mappers and aggregator, 1024-d) and
# `pooled_concat` (3×3 average pool per layer, channels concatenated, 128-d here):

# %%
for category in categories:
    results[category, "imagenet", "mean_mapped"] = evaluate(category, "imagenet", "mean_mapped")


def mean_metrics(weights: str, patch_feature: str) -> dict:
    return {key: float(np.mean([results[c, weights, patch_feature]["metrics"][key] for c in categories]))
            for key in ("image_auroc", "pixel_auroc", "aupro")}


def print_table(rows) -> None:
    print(f"{'':38s} {'image AUROC':>11s} {'pixel AUROC':>11s} {'AUPRO':>7s}")
    for weights, patch_feature in rows:
        for category in categories:
            result = results[category, weights, patch_feature]
            print_row(f"{category}, {weights}, {patch_feature} {result['bank'][1]}-d", result["metrics"])
        print_row(f"mean, {weights}, {patch_feature}", mean_metrics(weights, patch_feature))


print_table([("imagenet", "mean_mapped"), ("imagenet", "pooled_concat")])

# %%
gap = {key: abs(mean_metrics("imagenet", "mean_mapped")[key] - mean_metrics("imagenet", "pooled_concat")[key])
       for key in ("image_auroc", "pixel_auroc", "aupro")}
print("mean difference between the two features:", {key: round(value, 3) for key, value in gap.items()})
assert not EMBEDDED or max(gap.values()) < 0.03

# %% [markdown]
# On these drawn textures the two features score about the same, and `pooled_concat` is 8×
# shorter: a smaller bank and a faster search. Why it is mobilenet_v2's default: the reference's
# 1024-d mean mapper stretches the shallow layer's 32 × 9 values to 1024, and gives the deeper
# layer, with three times the channels, the same half of the vector. For wide_resnet50_2 (512
# and 1024 channels) that fits, and stays its default. Which suits *your* photographs,
# `real_data.py` measures (below).
#
# ## Are ImageNet features needed?
#
# The same mobilenet_v2 with seeded random weights:

# %%
for category in categories:
    results[category, "random", config.patch_feature] = evaluate(category, "random")
print_table([("imagenet", config.patch_feature), ("random", config.patch_feature)])
for key in ("image_auroc", "pixel_auroc", "aupro"):
    loss = mean_metrics("imagenet", config.patch_feature)[key] - mean_metrics("random", config.patch_feature)[key]
    print(f"{key}: ImageNet minus random weights, mean over categories: {loss:+.3f}")
gaps = {c: results[c, "imagenet", config.patch_feature]["metrics"]["aupro"]
        - results[c, "random", config.patch_feature]["metrics"]["aupro"] for c in categories}
print(f"AUPRO gap smallest on {min(gaps, key=gaps.get)} ({min(gaps.values()):+.3f}), "
      f"largest on {max(gaps, key=gaps.get)} ({max(gaps.values()):+.3f})")
if EMBEDDED:
    assert mean_metrics("imagenet", config.patch_feature)["aupro"] > mean_metrics("random", config.patch_feature)["aupro"]
    assert min(results[c, "random", config.patch_feature]["metrics"]["image_auroc"] for c in categories) > 0.85

# %% [markdown]
# Random weights are far from useless here. Random 3×3 convolutions still respond to edges,
# colour and contrast, and the drawn defects break a regular texture with exactly such changes.
# On the category printed as the smallest gap they come close to ImageNet, and a test on that
# category alone can even show them ahead. Over all categories ImageNet wins, most clearly in
# AUPRO: telling a faint defect from unusual normal texture takes features that know textures.
# How far random features fall on real photographs these textures cannot show;
# `real_data.py --weights random` measures it (next section).
#
# More sweeps (backbones, coreset ratios, random coresets):
# [deeper/05_sweeps](deeper/05_sweeps.ipynb).
#
# ## Where the model fails
#
# Per category, the **highest-scored good image** and the **lowest-scored defective image**, the
# true defect outlined, maps on the category's colour scale.

# %%
def hardest(labels: np.ndarray, scores: np.ndarray) -> tuple[int, int]:
    """Indices of the highest-scored good image and the lowest-scored defective image."""
    good, defective = np.flatnonzero(labels == 0), np.flatnonzero(labels == 1)
    return int(good[np.argmax(scores[good])]), int(defective[np.argmin(scores[defective])])


hard_cases = {category: hardest(data[category]["labels"], default[category]["scores"]) for category in categories}
for category, (top_good, low_defect) in hard_cases.items():
    test, scores = data[category]["test"], default[category]["scores"]
    print(f"{category}: top good {scores[top_good]:.2f} ({test.paths[top_good].split('/test/')[1]}), lowest "
          f"defective {scores[low_defect]:.2f} ({test.paths[low_defect].split('/test/')[1]}), "
          f"margin {scores[low_defect] - scores[top_good]:+.2f}")

# %%
fig, axes = plt.subplots(len(categories), 4, figsize=(12, 2.9 * len(categories)), squeeze=False)
for row, category in enumerate(categories):
    d, result = data[category], default[category]
    vmin, vmax = shared_scale(result["maps"])  # one colour scale per category
    for column, i, what in zip((0, 2), hard_cases[category], ("highest good", "lowest defect")):
        show_image(axes[row, column], d["images"][i])
        draw_mask_contour(axes[row, column], d["masks"][i])
        axes[row, column].set_title(f"{category}: {what}\n{d['test'].defects[i]}, score {result['scores'][i]:.2f}",
                                    fontsize=9)
        overlay_heatmap(axes[row, column + 1], d["images"][i], result["maps"][i], vmin=vmin, vmax=vmax)
        axes[row, column + 1].set_title("anomaly map", fontsize=9)
    add_colorbar(fig, axes[row, :], vmin, vmax, "anomaly score\n(Euclidean distance\nin feature space)", shrink=0.9)

# %% [markdown]
# A positive margin means every defective image outscores every good one. The lowest defects
# change little: a dark stain on a dark weave, a thin scratch along the grain. The top good
# images light up at the border, where features are partly computed from zero padding.
#
# ## Your own photographs
#
# Three options matter (`python -m pcnotes evaluate --help`):
#
# * **Crop or whole image.** Resizing the shorter side to 256 and keeping the centre 224 × 224
#   (the reference's) keeps only the middle of an elongated photograph, and a defect near an end
#   is cut away while the image stays labelled defective. So the CLI keeps that size for square
#   photographs only; for others it keeps the whole image at their median aspect ratio, e.g.
#   `--resize 256x608` (height × width; the crop is then `none`), in the config
#   `resize=(256, 608), crop=None`. `--resize` and `--crop` override its choice.
# * **Patch feature:** `--patch-feature mean_mapped|pooled_concat`.
# * **Resolution against time.** The grid follows the input at stride 8; the bank, the coreset
#   and the kNN search all grow with the patches (next cell).
#
# `benchmarks/real_data.py --data-root DIR` evaluates a folder in MVTec AD layout
# (`CATEGORY/train/good`, `CATEGORY/test/DEFECT`, `CATEGORY/ground_truth/DEFECT`) under a grid of
# these options, and writes `benchmarks/results/real_data_NAME.json`; the cell after next prints it.

# %%
# NBVAL_CHECK_OUTPUT
probe = PatchCore(config)
for height, width in ((224, 224), (320, 320), (256, 608)):
    _, grid = probe.embed(torch.zeros(1, 3, height, width))
    patches = grid[0] * grid[1]
    print(f"input {height}x{width}: grid {grid[0]}x{grid[1]}, {patches} patches per image, "
          f"memory bank of {coreset_size(NUM_TRAIN * patches, config.coreset_ratio)} for {NUM_TRAIN} images at 10 %")

# %%
files = sorted(results_dir().glob("real_data_*.json"))
if not files:
    print("no benchmarks/results/real_data_*.json yet: run benchmarks/real_data.py --data-root DIR")
for path in files:
    record = json.loads(path.read_text())
    print(f"{display_path(path)}: {len(record['categories'])} categories, {record['backbone']} "
          f"({record['weights']}), coreset {record['coreset_ratio']}")
    for result in record["results"]:
        mean = result["mean"]
        print(f"  {result['option']:28s} D {mean['feature_dim']:5d}  image AUROC {mean['image_auroc']:.3f}  "
              f"pixel AUROC {mean['pixel_auroc']:.3f}  AUPRO {mean['aupro']:.3f}")

# %% [markdown]
# ## Your PatchCore
#
# Every stage whose check passed was saved by `course.adopt`; `course.learner_stages()` loads
# them, and `PatchCore(config, stages=...)` runs them in place of the library's. The
# configuration is the one your stages build: the `mean_mapped` feature (patchify, align, mean
# mapper, aggregator), the exact greedy coreset (coreset size, greedy k-center) and the plain
# image score; your `auroc` ranks the scores. Your greedy loop holds an N×N distance matrix, so
# 8 training images are used: N = 8·784 = 6272 patches (in the 128-d projection), 315 MB in
# float64, a few seconds. Eq. 7 and PRO are not part of this configuration. A stage that did
# not pass runs as the library's, and the line below names it.

# %%
CAPSTONE = PatchCoreConfig(seed=SEED, patch_feature="mean_mapped", sampler="greedy")
RUNS = ("patchify", "align", "mean_mapper", "aggregator", "coreset_size", "greedy_k_center", "image_score", "auroc")
yours = {name: fn for name, fn in course.learner_stages().items() if name in RUNS}
category = categories[0]
train = load_split(root, category, "train", CAPSTONE)
train_images = torch.stack([train[i]["image"] for i in range(min(8, len(train)))])
d = data[category]
mine = PatchCore(CAPSTONE, stages=yours).fit(train_images)
library = PatchCore(CAPSTONE).fit(train_images)
mine_prediction, library_prediction = mine.predict(d["images"]), library.predict(d["images"])
print("your memory bank:", mine.memory_bank.shape, " test scores:", mine_prediction.scores.shape)

# %%
defective = np.flatnonzero(d["labels"] == 1)[:4]
vmin, vmax = shared_scale(mine_prediction.maps)
fig, axes = plt.subplots(1, len(defective), figsize=(3 * len(defective), 3.2), squeeze=False)
for ax, i in zip(axes[0], defective):
    overlay_heatmap(ax, d["images"][i], mine_prediction.maps[i], vmin=vmin, vmax=vmax)
    draw_mask_contour(ax, d["masks"][i])
    ax.set_title(f"{d['test'].defects[i]}: score {mine_prediction.scores[i]:.2f}", fontsize=9)
fig.tight_layout()

# %%
mine_auroc = mine.stages["auroc"](d["labels"], mine_prediction.scores)
library_auroc = library.stages["auroc"](d["labels"], library_prediction.scores)
print(f"your PatchCore: image AUROC {mine_auroc:.4f} (library {library_auroc:.4f}); "
      f"yours: {', '.join(n for n in RUNS if n in yours) or 'none'}; "
      f"library: {', '.join(n for n in RUNS if n not in yours) or 'none'}")
if set(yours) == set(RUNS):  # every stage yours: the same bank, scores and AUROC as the library's
    assert np.allclose(mine.memory_bank, library.memory_bank, atol=1e-5)
    assert np.allclose(mine_prediction.scores, library_prediction.scores, rtol=1e-4)
    assert f"{mine_auroc:.4f}" == f"{library_auroc:.4f}"

# %% [markdown]
# The [paper](https://arxiv.org/abs/2106.08265) and
# [patchcore-inspection](https://github.com/amazon-science/patchcore-inspection) report MVTec AD
# with wide_resnet50_2; we differ in backbone, data and training-set size.
#
# ## Summary
#
# * Image AUROC is the fraction of (defective, good) pairs ranked right, ties 1/2. Pixel AUROC
#   ranks pixels, so large defects dominate; AUPRO averages per region up to FPR = 0.3.
# * On the drawn textures both patch features score alike; `pooled_concat` is 8× shorter.
# * Random weights come close on the most regular drawn texture; over all categories ImageNet wins.
# * Misses are faint or thin defects; false alarms are rare normal texture and border patches.
# * For photographs, choose crop or whole image, patch feature and resolution, and measure with
#   `benchmarks/real_data.py`.
#
# Next: [06 · Coreset explorer](06_coreset_explorer.ipynb).
