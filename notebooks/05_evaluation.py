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
# 1. compute image AUROC by counting pairs;
# 2. say what image AUROC, pixel AUROC and AUPRO each reward;
# 3. read ROC and PRO curves.

# %% [markdown]
# ## Three metrics, three questions
#
# * **Image AUROC**: the chance that a random defective image outscores a random good one.
# * **Pixel AUROC**: the same over **pixels**. Large defects dominate, and good pixels are so
#   many that it sits near 1.
# * **AUPRO**: every defect region counts once. PRO(t) is the mean over regions of the fraction
#   of each region's pixels with map ≥ t; its area up to FPR = 0.3, divided by 0.3.

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
    NearestNeighbours,
    anomaly_map,
    compute_metrics,
    coreset_size,
    embed,
    image_scores,
    label_regions,
    pooled_concat,
    pro_curve,
    roc_curve_points,
    score_grid,
    select_coreset,
)

SEED = 0
torch.manual_seed(SEED)
plt.rcParams["figure.dpi"] = 80
SCORE_LABEL = "anomaly score (Euclidean distance in feature space)"

# %% [markdown]
# ## The backbone runs once per image
#
# 16 training images per category, the whole test set, each through the backbone once (all
# training images: `python -m pcnotes evaluate`).

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
# The stages of notebooks 02–04, with the default coreset (10 %, approximate greedy):

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
    bank = train_features[select_coreset(train_features, config.coreset_ratio, config.sampler, seed=SEED)]
    grid_scores = score_grid(NearestNeighbours(bank), test_features, len(d["labels"]), grid)
    scores = image_scores(grid_scores)
    maps = anomaly_map(grid_scores, size=tuple(d["images"].shape[-2:]), sigma=config.sigma)
    return {"scores": scores, "maps": maps, "bank": bank.shape,
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
course.check_auroc(auroc)

# %% [markdown]
# ## ROC curves
#
# A few percent of FPR is thousands of false pixels, so pixel AUROC flatters.

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
course.check_pro(pro)

# %% [markdown]
# ## AUPRO: the PRO curve
#
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
# Small or faint regions are found only at thresholds that already flag good pixels: AUPRO is
# the strictest of the three.

# %% [markdown]
# Where the model fails, two patch features, random weights, your photographs:
# [deeper/05_choices](deeper/05_choices.ipynb); backbones, coreset ratios:
# [deeper/05_sweeps](deeper/05_sweeps.ipynb).

# %% [markdown]
# ## Summary
#
# * Image AUROC counts pairs; pixel AUROC favours large defects; AUPRO counts each region once.
#
# Next: [06 · Coreset explorer](06_coreset_explorer.ipynb).
