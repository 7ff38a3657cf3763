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
import matplotlib.pyplot as plt
import numpy as np
import torch
from scipy import ndimage

from pcnotes import (
    PatchCore,
    PatchCoreConfig,
    Prediction,
    course,
    ensure_default_dataset,
    list_categories,
    load_split,
    read_manifest,
    stack,
)
from pcnotes.app.plots import draw_mask_contour, overlay_heatmap, shared_scale
from pcnotes.stages import compute_metrics, label_regions, pro_curve, roc_curve_points

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
extractor = PatchCore(config).extractor


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
                      "maps": (feature_maps(extractor, train_images), feature_maps(extractor, test_images))}
    shapes = ", ".join(f"{layer} {tuple(fmap.shape[1:])}" for layer, fmap in data[category]["maps"][1].items())
    print(f"{category}: train {len(train_images)}, test {len(test)} ({int(data[category]['labels'].sum())} defective); {shapes}")

# %% [markdown]
# The stages of notebooks 02–04, with the default coreset (10 %, approximate greedy).
# `patch_features`, `fit_features` and `score_features` are PatchCore's seam below the images:
# patch features `(N·H·W, D)` and their grid from the backbone's maps, so the maps are reused.

# %%
def fit_and_score(model: PatchCore, category: str, num_train: int = NUM_TRAIN) -> tuple[PatchCore, Prediction]:
    """Fit ``model`` on the first ``num_train`` training maps, score the test set: ``(model, prediction)``."""
    train_maps, test_maps = data[category]["maps"]
    train_features, grid = model.patch_features({layer: fmap[:num_train] for layer, fmap in train_maps.items()})
    test_features, _ = model.patch_features(test_maps)
    model.fit_features(train_features.numpy(), grid)
    return model, model.score_features(test_features.numpy(), grid, size=tuple(data[category]["images"].shape[-2:]))


def evaluate(category: str) -> dict:
    """The default model: scores (N,), maps (N, H, W), its bank's shape and the three metrics."""
    d = data[category]
    model, (scores, maps) = fit_and_score(PatchCore(config), category)
    return {"scores": scores, "maps": maps, "bank": model.memory_bank.shape,
            "metrics": compute_metrics(d["labels"], scores, d["masks"], maps)}


# %% [markdown]
# ## Every category, default configuration

# %%
default = {category: evaluate(category) for category in categories}


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
# A few percent of FPR is thousands of false pixels, so pixel AUROC flatters.

# %%
fig, axes = plt.subplots(1, 2, figsize=(8.4, 4))
image_curves = {}
for category, result in default.items():
    d, m = data[category], result["metrics"]
    image_curves[category] = roc_curve_points(d["labels"], result["scores"])
    axes[0].plot(*image_curves[category], label=f"{category} ({m['image_auroc']:.3f})")
    axes[1].plot(*roc_curve_points(d["masks"].ravel(), result["maps"].ravel()),
                 label=f"{category} ({m['pixel_auroc']:.3f})")
fpr, tpr = next(iter(image_curves.values()))
if all(len(f) == len(fpr) and np.allclose(f, fpr) and np.allclose(t, tpr) for f, t in image_curves.values()):
    axes[0].text(0.35, 0.55, f"the {len(image_curves)} curves coincide:\nonly the last drawn shows", fontsize=9)
for ax, title in zip(axes, ("image-level ROC", "pixel-level ROC")):
    ax.plot([0, 1], [0, 1], "k:", lw=1)
    ax.set(xlabel="false-positive rate", ylabel="true-positive rate", title=title)
    ax.legend(fontsize=9, title="AUROC", title_fontsize=9, loc="lower right")
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
# ## AUPRO: the PRO curve
#
# PRO(t) over all thresholds, against the FPR on good pixels:

# %%
fig, axes = plt.subplots(1, 2, figsize=(8.4, 4))
for category, result in default.items():
    fpr, overlap = pro_curve(data[category]["masks"], result["maps"])
    for ax in axes:
        ax.plot(fpr, overlap, label=f"{category} (AUPRO {result['metrics']['aupro']:.3f})")
for ax, right, title in zip(axes, (1.0, 0.1), ("per-region overlap", "zoom: FPR up to 0.1")):
    ax.axvline(0.3, color="k", ls="--", lw=1)
    ax.set(xlim=(0, right), xlabel="false-positive rate (good pixels)", ylabel="PRO: mean overlap per region",
           title=title)
axes[0].text(0.31, 0.05, "FPR = 0.3:\narea counted\nto the left", fontsize=9)
axes[0].legend(fontsize=9, loc="lower right")
fig.tight_layout()

# %% [markdown]
# Small or faint regions are found only at thresholds that already flag good pixels: AUPRO is
# the strictest of the three.

# %% [markdown]
# Where the model fails, two patch features, random weights, your photographs:
# [deeper/05_choices](deeper/05_choices.ipynb); backbones, coreset ratios:
# [deeper/05_sweeps](deeper/05_sweeps.ipynb).

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
d = data[category]  # the same backbone and layers as above: its maps are reused
mine, mine_prediction = fit_and_score(PatchCore(CAPSTONE, stages=yours), category, num_train=8)
library, library_prediction = fit_and_score(PatchCore(CAPSTONE), category, num_train=8)
print("your memory bank:", mine.memory_bank.shape, " test scores:", mine_prediction.scores.shape)

# %%
defective = np.flatnonzero(d["labels"] == 1)[:4]
vmin, vmax = shared_scale(mine_prediction.maps)
fig, axes = plt.subplots(1, len(defective), figsize=(8.4, 2.8), squeeze=False)
for ax, i in zip(axes[0], defective):
    overlay_heatmap(ax, d["images"][i], mine_prediction.maps[i], vmin=vmin, vmax=vmax)
    draw_mask_contour(ax, d["masks"][i])
    ax.set_title(f"{d['test'].defects[i]}\nscore {mine_prediction.scores[i]:.2f}", fontsize=9)
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
# * Image AUROC counts pairs; pixel AUROC favours large defects; AUPRO counts each region once.
#
# Next: [06 · Coreset explorer](06_coreset_explorer.ipynb).
