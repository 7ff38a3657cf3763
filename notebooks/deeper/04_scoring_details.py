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
# # 04 deeper · Scoring details: the blur, squared distances, eq. 7 measured, and normalising maps
#
# Continues [04 · Scoring and heat maps](../04_scoring_and_heatmaps.ipynb). Reading for after class:
# the same model (the default `mobilenet_v2`, `pooled_concat`, 16 training images of the first
# category), then faiss against torch and four questions a curious learner asks.
#
# **Learning goals.** After this notebook you can
#
# 1. say what the Gaussian blur (σ = 4) does to a map of 8×8-pixel patch scores;
# 2. say what squared distances change, and what they do not;
# 3. judge from a measurement on every category whether eq. 7 helps;
# 4. explain why heat maps are normalised over the whole test set.

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
# JPEG: photos of textures stay small in the .ipynb (as PNG, one figure is ~1 MB)
# %config InlineBackend.figure_formats = ["jpeg"]
import matplotlib.pyplot as plt
import numpy as np
import torch

from pcnotes import (
    PatchCore,
    PatchCoreConfig,
    course,
    ensure_default_dataset,
    list_categories,
    list_defects,
    load_split,
    read_manifest,
    stack,
)
from pcnotes.app.plots import add_colorbar, draw_mask_contour, overlay_heatmap, shared_scale, show_image
from pcnotes.stages import (
    NearestNeighbours,
    anomaly_map,
    image_auroc,
    image_scores,
    normalize_maps,
    patch_scores,
    pixel_auroc,
    reweighted_image_scores,
    score_grid,
    upsample_scores,
)

SEED = 0
torch.manual_seed(SEED)
plt.rcParams["figure.dpi"] = 80
SCORE_LABEL = "anomaly score\n(Euclidean distance in feature space)"


# %% [markdown]
# ## A model to score with
#
# The default `mobilenet_v2` with its shipped ImageNet weights and its default patch feature,
# `pooled_concat` (notebook 02), fitted on 16 training images. We extract the test set's patch
# features once.

# %%
# NBVAL_CHECK_OUTPUT
root = ensure_default_dataset(seed=SEED)  # $PCNOTES_DATA when it is set
EMBEDDED = read_manifest(root) is not None  # the generated set: its metric thresholds are asserted
config = PatchCoreConfig(seed=SEED)
categories = list_categories(root)
CATEGORY = categories[0]  # fabric in the embedded set


def fit_and_extract(category: str, n_train: int = 16):
    """Fit on ``n_train`` good images of ``category``; return the model, the test set and its patch features."""
    train = load_split(root, category, "train", config)
    fitted = PatchCore(config).fit(torch.stack([train[i]["image"] for i in range(min(n_train, len(train)))]))
    test_set = load_split(root, category, "test", config)
    images, test_masks = stack(test_set)
    return fitted, test_set, images, test_masks, fitted.extract(images)


model, test, test_images, masks, (test_features, grid) = fit_and_extract(CATEGORY)
labels = np.asarray(test.labels)
n_test, D = len(test), model.feature_dim
assert test_features.shape == (n_test * 28 * 28, D) and grid == (28, 28)
print("patch feature:", config.patch_feature, " D =", D)
print("memory bank:", model.memory_bank.shape, " test patch features:", test_features.shape)

# %% [markdown]
# ## Nearest neighbours: faiss and torch agree
#
# `NearestNeighbours` searches exactly, with faiss `IndexFlatL2` (as the reference does) or plain
# torch (`|q|² − 2 q·b + |b|²`, then `topk`). Their float32 rounding differs, hence a tolerance.

# %%
faiss_index = NearestNeighbours(model.memory_bank, backend="faiss")
torch_index = NearestNeighbours(model.memory_bank, backend="torch")
faiss_distances, faiss_nearest = faiss_index.search(test_features, k=1)
torch_distances, torch_nearest = torch_index.search(test_features, k=1)
print(f"largest |faiss - torch| distance: {np.abs(faiss_distances - torch_distances).max():.1e}")
print(f"same nearest entry for {np.mean(faiss_nearest == torch_nearest):.2%} of the patches")

# %%
# NBVAL_CHECK_OUTPUT
same = np.allclose(faiss_distances, torch_distances, rtol=0, atol=1e-4)
assert same
print("faiss and torch nearest distances agree to 1e-4:", same)

# %% [markdown]
# ## From 1568 scores to two maps: the shapes
#
# Two test images, one good and one defective. `score_grid` scores each patch (`(1568,)`),
# gives each image its 784 and lays them on the 28×28 grid; `anomaly_map` upsamples and blurs.
# `wide_resnet50_2` gives the same shapes: its grid is also 28×28, and a score does not depend on D.

# %%
# NBVAL_CHECK_OUTPUT
DEFECT = list_defects(root, CATEGORY)[-1]  # thread in the embedded fabric
example = int(np.flatnonzero(np.asarray(test.defects) == DEFECT)[0])
pair = [int(np.flatnonzero(labels == 0)[0]), example]  # one good image, one defective
batch = test_images[pair]
features, grid = model.embed(batch)
per_patch = patch_scores(model.index, features, k=1)
score_grids = score_grid(model.index, features, batch_size=2, grid=grid, k=1)
per_image = score_grids.reshape(2, -1)
pair_maps = anomaly_map(score_grids, size=224, sigma=4)
assert np.array_equal(per_image.ravel(), per_patch)  # image 0's 784 scores, then image 1's
print("features", tuple(features.shape))
print("patch scores per batch -> per image -> map:", per_patch.shape, "->", per_image.shape, "->",
      score_grids.shape, "->", pair_maps.shape)
assert per_patch.shape == (1568,) and per_image.shape == (2, 784)
assert score_grids.shape == (2, 28, 28) and pair_maps.shape == (2, 224, 224)

# %% [markdown]
# ## Why blur with σ = 4?
#
# Each patch score covers an 8×8-pixel cell. Bilinear upsampling joins the cells with straight
# ramps, so the 28×28 grid still shows. The Gaussian (σ = 4 pixels, half a cell, as in the paper
# and the reference) melts the blocks into one blob and damps single noisy cells.

# %%
upsampled = upsample_scores(score_grids, size=224)
fig, axes = plt.subplots(2, 2, figsize=(7.2, 6.6), layout="constrained")
axes = axes.ravel()
show_image(axes[0], batch[1])
draw_mask_contour(axes[0], masks[example])
axes[0].set_title("image + ground truth")
vmin, vmax = shared_scale(upsampled[1])
for ax, (image, title) in zip(axes[1:], [(score_grids[1], "patch scores 28×28"),
                                         (upsampled[1], "bilinear 224×224"), (pair_maps[1], "+ Gaussian σ = 4")]):
    ax.imshow(image, cmap="jet", vmin=vmin, vmax=vmax, interpolation="nearest")
    ax.set_title(title)
    ax.set_axis_off()
_ = add_colorbar(fig, axes[1:], vmin, vmax, SCORE_LABEL)

# %% [markdown]
# ## The reference's squared-L2 quirk
#
# faiss returns **squared** distances, and
# [patchcore-inspection](https://github.com/amazon-science/patchcore-inspection) scores with them.
# The paper and `pcnotes` use the Euclidean distance; `squared=True` reproduces the reference.
# Squaring is monotone, so rankings and image AUROC cannot change. What mixes scores (the blur,
# eq. 7) gives other numbers.

# %%
squared_index = NearestNeighbours(model.memory_bank, squared=True)
squared_distances, _ = squared_index.search(test_features, k=1)
assert np.allclose(squared_distances, faiss_distances**2, rtol=1e-5)
euclidean_grids = score_grid(faiss_index, test_features, n_test, grid)
squared_grids = score_grid(squared_index, test_features, n_test, grid)
scores, maps = image_scores(euclidean_grids), anomaly_map(euclidean_grids)
squared_scores, squared_maps = image_scores(squared_grids), anomaly_map(squared_grids)
assert np.array_equal(np.argsort(scores, kind="stable"), np.argsort(squared_scores, kind="stable"))
print(f"image AUROC, Euclidean: {image_auroc(labels, scores):.3f}   squared: {image_auroc(labels, squared_scores):.3f}")
print(f"pixel AUROC, Euclidean: {pixel_auroc(masks, maps):.4f}   squared: {pixel_auroc(masks, squared_maps):.4f}")
contrast = [m[example].max() / np.median(m[example]) for m in (maps, squared_maps)]
print(f"peak / median of one defective map, Euclidean: {contrast[0]:.2f}   squared: {contrast[1]:.2f}")

# %% [markdown]
# The squared map has more contrast, yet the pixel AUROC printed above barely moves: the blur
# mixes neighbouring scores but rarely reorders pixels.

# %% [markdown]
# ## Does eq. 7 help? Measured on every category
#
# One model per category: image AUROC of the plain maximum against eq. 7 at b = 9 (anomalib's
# value), the mean weight of good and of defective images, and the **margin**, the lowest
# defective score over the highest good one (above 1: every defective image outscores every good one).

# %%
B = 9


def margin(image_scores_: np.ndarray, truth: np.ndarray) -> float:
    return float(image_scores_[truth == 1].min() / image_scores_[truth == 0].max())


print(f"{'category':12} AUROC max  AUROC eq.7  weight good  weight defective  margin max  margin eq.7")
weight_gaps, margins = [], []
for category in categories:
    if category == CATEGORY:
        fitted, truth, feats = model, labels, test_features
    else:
        fitted, other, _, _, (feats, _) = fit_and_extract(category)
        truth = np.asarray(other.labels)
    plain = image_scores(score_grid(fitted.index, feats, len(truth), grid))
    eq7 = reweighted_image_scores(fitted.index, feats, len(truth), b=B)
    weights = eq7 / plain
    assert np.all((weights >= B / (B + 1) - 1e-6) & (weights < 1))
    weight_gaps.append(weights[truth == 0].mean() - weights[truth == 1].mean())
    margins.append((margin(plain, truth), margin(eq7, truth)))
    print(f"{category:12} {image_auroc(truth, plain):9.3f}  {image_auroc(truth, eq7):10.3f}"
          f"  {weights[truth == 0].mean():11.4f}  {weights[truth == 1].mean():16.4f}"
          f"  {margins[-1][0]:10.3f}  {margins[-1][1]:11.3f}")
print("defective images get the lower mean weight in", sum(gap > 0 for gap in weight_gaps), "of", len(categories),
      "categories; eq. 7 narrows the margin in", sum(after < before for before, after in margins))

# %% [markdown]
# With the default 128-d feature the plain maximum already ranks every defective image above
# every good one, and eq. 7 keeps that ranking. It does not help either: defective images get the
# *lower* mean weight (a defect patch's nearest bank entry tends to sit in a dense normal region),
# so the margin shrinks. Where good and defective scores overlap (a weaker feature, harder data),
# that shrinking can swap images and cost AUROC. Hence it stays off by default.

# %%
if EMBEDDED:  # claims about the embedded set; other data may differ
    assert all(gap > 0 for gap in weight_gaps) and all(after < before for before, after in margins)

# %% [markdown]
# ## Normalising heat maps: over the test set, or each on its own?
#
# The reference min-max normalises **over the whole test set**: one minimum and one maximum for
# all maps, so a clean image stays cool. Normalising **each map on its own** stretches every map
# to [0, 1], so the least normal spot of a flawless image turns red.

# %%
good = int(np.flatnonzero(labels == 0)[np.argmin(scores[labels == 0])])  # the cleanest good image
whole_set = normalize_maps(maps, per_image=False)
per_image_maps = normalize_maps(maps, per_image=True)
fig, axes = plt.subplots(2, 3, figsize=(8.4, 5.6), layout="constrained")
for row, (i, name) in enumerate(((good, "good"), (example, test.defects[example]))):
    show_image(axes[row, 0], test_images[i])
    draw_mask_contour(axes[row, 0], masks[i])
    axes[row, 0].set_title(f"{name}, score {scores[i]:.2f}")
    for column, (normalised, how) in enumerate(((whole_set, "whole test set"), (per_image_maps, "per image")), 1):
        overlay_heatmap(axes[row, column], test_images[i], normalised[i], vmin=0, vmax=1)
        axes[row, column].set_title(f"{how}\nmax {normalised[i].max():.2f}")
_ = add_colorbar(fig, axes[:, 1:], 0, 1, "normalised score")

# %%
# NBVAL_CHECK_OUTPUT
assert per_image_maps[good].max() == 1.0  # every map reaches 1 when normalised on its own
assert whole_set[good].max() < whole_set[example].max()
print("per image: the good image's map reaches 1.0:", bool(per_image_maps[good].max() == 1.0))
print("whole set: the good image stays below the defective one:", bool(whole_set[good].max() < whole_set[example].max()))

# %% [markdown]
# A per-image map answers "where is this image *least* normal?", which always has an answer.
