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
# # 04 · Scoring and heat maps: from nearest neighbours to pictures
#
# **12 minutes** · previous: [03 · Coreset](03_coreset.ipynb) ·
# next: [05 · Evaluation](05_evaluation.ipynb)
#
# **Learning goals.** After this notebook you can
#
# 1. score patches and images by their distance to the memory bank (eq. 6);
# 2. follow the scores' shapes from `(1568,)` to two `(224, 224)` anomaly maps;
# 3. read heat maps on one colour scale for the whole test set;
# 4. compute eq. 7 (fast finishers).
#
# ```text
# test patches (B·784, D) --nearest bank entry--> patch scores (B·784,) -> (B, 28, 28)
#   --max--> image scores (B,)      --bilinear + Gaussian σ=4--> anomaly maps (B, 224, 224)
# ```

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
SCORE_LABEL = "anomaly score (Euclidean distance in feature space)"


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
# ## Exercise: the image score (eq. 6)
#
# A test patch scores its Euclidean distance to the nearest bank entry. An image scores the
# largest of its patch scores ([paper](https://arxiv.org/abs/2106.08265), eq. 6):
#
# $$s^* = \max_{m^{test} \in \mathcal{P}(x^{test})} \; \min_{m \in \mathcal{M}} \lVert m^{test} - m \rVert_2 .$$
#
# The features of a batch come flat, image after image: rows `0 … H·W−1` are image 0.

# %% tags=["solution"]
def image_score(features: np.ndarray, bank: np.ndarray, batch_size: int) -> np.ndarray:
    """Eq. 6: ``features (B*H*W, D)`` and ``bank (M, D)`` -> image scores ``(B,)``.

    Each patch's Euclidean distance to its nearest bank entry (torch.cdist, then a min),
    then the largest patch score of each image (reshape to (batch_size, -1), then a max).
    """
    distances = torch.cdist(torch.as_tensor(features, dtype=torch.float64),
                            torch.as_tensor(bank, dtype=torch.float64))
    nearest = distances.min(dim=1).values
    return nearest.reshape(batch_size, -1).max(dim=1).values.numpy()


# %%
# NBVAL_CHECK_OUTPUT
image_score = course.adopt("image_score", image_score, course.check_image_score(image_score))

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
# The image score is the grid's maximum (eq. 6): your `image_score` (or the library's, where its
# check failed) gives it from the features and the bank, and `PatchCore.predict` runs the same steps:

# %%
# NBVAL_CHECK_OUTPUT
prediction = model.predict(batch)
yours = image_score(features.numpy(), model.memory_bank, 2)
assert np.allclose(prediction.maps, pair_maps) and np.allclose(prediction.scores, image_scores(score_grids))
assert np.allclose(prediction.scores, yours, rtol=1e-4)
print("scores", prediction.scores.shape, "maps", prediction.maps.shape)
print("the good image scores lower than the defective one:", bool(prediction.scores[0] < prediction.scores[1]))

# %% [markdown]
# faiss against torch, why blur with σ = 4, squared distances, eq. 7 on every category, and
# per-image normalising: [deeper/04_scoring_details](deeper/04_scoring_details.ipynb).

# %% [markdown]
# ## Heat maps on defective images
#
# One defective image of each kind: its map on one colour scale for the whole test set, and the
# ground-truth outline in white.

# %%
euclidean_grids = score_grid(model.index, test_features, n_test, grid)
scores, maps = image_scores(euclidean_grids), anomaly_map(euclidean_grids)  # every test image
kinds = sorted(set(test.defects) - {"good"})
vmin, vmax = shared_scale(maps)
fig, axes = plt.subplots(2, len(kinds), figsize=(8.4, 5.2), squeeze=False, layout="constrained")  # 672 px: fits the book
for column, kind in enumerate(kinds):
    i = int(np.flatnonzero(np.asarray(test.defects) == kind)[0])
    show_image(axes[0, column], test_images[i])
    draw_mask_contour(axes[0, column], masks[i])
    axes[0, column].set_title(f"{kind}\nground truth")
    overlay_heatmap(axes[1, column], test_images[i], maps[i], vmin=vmin, vmax=vmax)
    draw_mask_contour(axes[1, column], masks[i])
    axes[1, column].set_title(f"image score\n{scores[i]:.2f}")
_ = add_colorbar(fig, axes[1, :], vmin, vmax, "anomaly score\n(Euclidean distance\nin feature space)")

# %% [markdown]
# ## For fast finishers: eq. 7, re-weighting the image score
#
# Let m_test* be the most anomalous test patch, m* its nearest bank entry and N_b(m*) the b
# nearest bank neighbours of m*. The paper scales s* by one minus a softmax:
#
# $$s = \Big(1 - \frac{\exp\lVert m^{test,*} - m^*\rVert_2}{\sum_{m \in \mathcal{N}_b(m^*) \cup \{m^*\}} \exp\lVert m^{test,*} - m\rVert_2}\Big)\, s^* .$$
#
# m* is the closest of the b + 1, so the weight lies in [b/(b+1), 1). It is lowest when m*'s
# neighbours are as close to the test patch as m*: a dense region of normal features.
# patchcore-inspection skips eq. 7; `pcnotes` has `PatchCoreConfig(reweight=b)`, off by default.
#
# Three conventions circulate. The paper's text sums over N_b(m*) alone, which leaves m* out of
# its own softmax. anomalib's b = 9 counts m* among the 9, so 8 true neighbours. `pcnotes` (the
# formula above) uses {m*} ∪ N_b(m*): m* and b other entries, b + 1 distances. The checker
# names the other two if you write them.
#
# ## Exercise for fast finishers: eq. 7

# %% tags=["solution"]
from scipy.spatial.distance import cdist


def reweighted_score(features: np.ndarray, bank: np.ndarray, batch_size: int, b: int) -> np.ndarray:
    """Eq. 7: ``features (B*H*W, D)``, ``bank (M, D)`` -> re-weighted image scores ``(B,)``.

    Per image: the patch with the largest nearest-bank distance s* and that bank entry m*;
    m*'s b nearest neighbours in the bank (m* itself left out); d = the Euclidean distances
    from that patch to m* and to those b entries; the score is (1 - softmax(d)[0]) * s*.
    """
    bank = np.asarray(bank, dtype=np.float64)
    scores = []
    for patches in np.asarray(features, dtype=np.float64).reshape(batch_size, -1, bank.shape[1]):
        distances = cdist(patches, bank)
        worst = int(np.argmax(distances.min(axis=1)))
        m_star = int(np.argmin(distances[worst]))
        order = np.argsort(np.linalg.norm(bank - bank[m_star], axis=1), kind="stable")
        around = order[order != m_star][:b]
        d = distances[worst, [m_star, *around]]
        softmax = np.exp(d - d.max()) / np.exp(d - d.max()).sum()
        scores.append((1.0 - softmax[0]) * distances[worst, m_star])
    return np.array(scores)


# %%
# NBVAL_CHECK_OUTPUT
reweighted_score = course.adopt("reweighted_score", reweighted_score, course.check_reweighting(reweighted_score))

# %% [markdown]
# Your eq. 7 on the good and the defective image scored above, at b = 9:

# %%
weighted = reweighted_score(features.numpy(), model.memory_bank, 2, 9)
weights = weighted / prediction.scores
print("eq. 7 scores", np.round(weighted, 3), " weights", np.round(weights, 4))
assert weighted.shape == (2,) and np.all((weights >= 9 / 10 - 1e-4) & (weights < 1))

# %% [markdown]
# ## Summary
#
# * A patch scores its distance to the nearest bank entry, an image its largest patch score
#   (eq. 6).
# * Shapes: `(1568,) -> (2, 784) -> (2, 28, 28) -> (2, 224, 224)`, then bilinear upsampling and
#   a Gaussian of σ = 4.
# * Heat maps share one colour scale over the whole test set.
#
# Next: [05 · Evaluation](05_evaluation.ipynb).
