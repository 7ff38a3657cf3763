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
# **Learning goals.** After this notebook you can
#
# 1. score test patches by their distance to the nearest memory-bank entry, with faiss or with
#    plain torch, and check that the two agree;
# 2. explain the reference code's *squared*-distance quirk, and what it changes and what it
#    does not;
# 3. follow the scores' shapes from `(1568,)` to two `(224, 224)` anomaly maps, and say why the
#    map is blurred with a Gaussian of σ = 4;
# 4. read a heat map against the ground-truth mask;
# 5. compute the paper's eq. 7 re-weighted image score (skipped by the reference code) and judge
#    its effect;
# 6. tell apart whole-test-set and per-image normalisation of heat maps, and explain why the
#    second one makes a clean image look broken.
#
# Stages 6–7 of the pipeline:
#
# ```text
# test patches (B·784, 1024) --kNN to the bank (M, 1024)--> patch scores (B·784,)
#   -> (B, 784) -> (B, 28, 28) --max--> image scores (B,)
#                              --bilinear + Gaussian σ=4--> anomaly maps (B, 224, 224)
# ```

# %%
# %matplotlib inline
# JPEG: photos of textures stay small in the .ipynb (as PNG, one figure is ~1 MB)
# %config InlineBackend.figure_formats = ["jpeg"]
import matplotlib.pyplot as plt
import numpy as np
import torch

from pcnotes.data import list_categories, list_defects
from pcnotes.evaluation import load_split, stack
from pcnotes.maps import anomaly_map, normalize_maps, upsample_scores
from pcnotes.metrics import image_auroc, pixel_auroc
from pcnotes.model import PatchCore, PatchCoreConfig
from pcnotes.patches import scores_to_grid, unpatch_scores
from pcnotes.scoring import NearestNeighbours, image_scores, patch_scores, reweighted_image_scores
from pcnotes.synth import ensure_default_dataset
from pcnotes.viz import draw_mask_contour, overlay_heatmap, shared_scale, show_image

SEED = 0
torch.manual_seed(SEED)
plt.rcParams["figure.dpi"] = 80

# %% [markdown]
# ## A model to score with
#
# We fit PatchCore (mobilenet_v2 with its shipped ImageNet weights, approximate greedy coreset at
# 10 %) on 16 training images of the `fabric` category. The whole test set of that category is
# 12 good images and 24 defective ones, 6 for each of 4 kinds of defect. We extract its patch
# features **once** and reuse them in every section below.

# %%
# NBVAL_CHECK_OUTPUT
root = ensure_default_dataset(seed=SEED)
config = PatchCoreConfig(seed=SEED)
CATEGORY = list_categories(root)[0]  # from the folders (so MVTec AD works too): fabric here
train = load_split(root, CATEGORY, "train", config)
model = PatchCore(config).fit(torch.stack([train[i]["image"] for i in range(16)]))
test = load_split(root, CATEGORY, "test", config)
test_images, masks = stack(test)
labels = np.asarray(test.labels)
n_test = len(test)  # 36 in the embedded set
test_features, grid = model.extract(test_images)  # (n_test * 784, 1024)
assert model.memory_bank.shape == (int(16 * 784 * config.coreset_ratio), 1024)  # 1254
assert test_features.shape == (n_test * 784, 1024) and masks.shape == (n_test, 224, 224)
print("memory bank:", model.memory_bank.shape)
print("test images:", tuple(test_images.shape), "good:", int((labels == 0).sum()), "defective:", int(labels.sum()))
print("test patch features:", test_features.shape)

# %% [markdown]
# ## Nearest neighbours: faiss and torch agree
#
# A patch's score is its Euclidean distance to the nearest entry of the memory bank.
# `NearestNeighbours` searches exactly, with one of two backends:
#
# * **faiss** `IndexFlatL2`: a brute-force index, well optimised (and on a GPU when faiss-gpu is
#   installed). It is what the reference code uses.
# * **torch**: the same brute force written out as |q|² − 2 q·b + |b|², one matrix product per
#   chunk of queries, then `topk`.
#
# Both compute in float32 and round differently, so we compare them to a tolerance, not bit for
# bit.

# %%
faiss_index = NearestNeighbours(model.memory_bank, backend="faiss")
torch_index = NearestNeighbours(model.memory_bank, backend="torch")
faiss_distances, faiss_nearest = faiss_index.search(test_features, k=1)
torch_distances, torch_nearest = torch_index.search(test_features, k=1)
assert faiss_distances.shape == torch_distances.shape == (n_test * 784, 1)
print(f"largest |faiss - torch| distance: {np.abs(faiss_distances - torch_distances).max():.1e}")
print(f"typical distance: {np.median(faiss_distances):.1f}")
print(f"same nearest entry for {np.mean(faiss_nearest == torch_nearest):.2%} of the patches")

# %%
# NBVAL_CHECK_OUTPUT
same = np.allclose(faiss_distances, torch_distances, rtol=0, atol=1e-4)
assert same
print("faiss and torch nearest distances agree to 1e-4:", same)

# %% [markdown]
# Where the two pick different entries, those entries are (almost) equally far away, so the
# score is the same either way. Only the distance enters the score, never the index.
#
# ## The reference's squared-L2 quirk
#
# faiss's `IndexFlatL2` returns **squared** distances. patchcore-inspection uses them as scores
# as they are, without a square root. The paper, and `pcnotes` by default, use the Euclidean
# distance. `NearestNeighbours(..., squared=True)` reproduces the reference.
#
# * **The ranking is the same.** Squaring is monotone on non-negative numbers, so patches and
#   images come out in the same order, and image AUROC cannot change.
# * **The contrast is not.** A patch that is twice as far away scores four times as high, so peaks
#   stand out more against the background. Anything that mixes scores (the Gaussian blur, the
#   mean over k neighbours, eq. 7's weights) gives different numbers, and so can pixel metrics.

# %%
squared_index = NearestNeighbours(model.memory_bank, squared=True)
squared_distances, _ = squared_index.search(test_features, k=1)
assert np.allclose(squared_distances, faiss_distances**2, rtol=1e-5)
order = np.argsort(squared_distances[:, 0], kind="stable")
assert np.all(np.diff(faiss_distances[order, 0]) >= 0)  # sorted by squared = sorted by Euclidean


def maps_from(distances: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Patch distances ``(B*784, 1)`` -> image scores ``(B,)`` and anomaly maps ``(B, 224, 224)``."""
    score_grid = scores_to_grid(unpatch_scores(torch.from_numpy(distances[:, 0]), len(test_images)), grid)
    return image_scores(score_grid.numpy()), anomaly_map(score_grid.numpy(), size=224, sigma=4)


scores, maps = maps_from(faiss_distances)
squared_scores, squared_maps = maps_from(squared_distances)
assert np.array_equal(np.argsort(scores, kind="stable"), np.argsort(squared_scores, kind="stable"))
print(f"image AUROC, Euclidean: {image_auroc(labels, scores):.3f}   squared: {image_auroc(labels, squared_scores):.3f}")
print(f"pixel AUROC, Euclidean: {pixel_auroc(masks, maps):.3f}   squared: {pixel_auroc(masks, squared_maps):.3f}")

# %% [markdown]
# Both maps of one defective image, each min-max normalised over the whole test set as the
# reference does. The squared map has the same hot spot and a darker background.

# %%
DEFECT = list_defects(root, CATEGORY)[-1]  # the last kind: thread in the embedded fabric
example = int(np.flatnonzero(np.asarray(test.defects) == DEFECT)[0])
fig, axes = plt.subplots(1, 3, figsize=(10, 3.6))
show_image(axes[0], test_images[example])
draw_mask_contour(axes[0], masks[example])
axes[0].set_title(f"{test.defects[example]} (ground truth)")
for ax, name, all_maps in ((axes[1], "Euclidean (paper)", maps), (axes[2], "squared (reference)", squared_maps)):
    normalised = normalize_maps(all_maps)[example]
    peak_to_median = all_maps[example].max() / np.median(all_maps[example])
    ax.imshow(normalised, cmap="jet", vmin=0, vmax=1)
    ax.set_title(f"{name}\npeak / median = {peak_to_median:.2f}")
    ax.set_axis_off()
fig.tight_layout()

# %% [markdown]
# ## From 1568 scores to two maps: the shapes
#
# Take two test images, one good and one defective, through the scoring stage by hand.
# `unpatch_scores` gives each image back its 784 scores. `scores_to_grid` lays them out on the
# 28×28 patch grid. `anomaly_map` upsamples to 224×224 and blurs.

# %%
# NBVAL_CHECK_OUTPUT
pair = [int(np.flatnonzero(labels == 0)[0]), example]  # one good image, one defective
batch = test_images[pair]
features, grid = model.embed(batch)
per_patch = torch.from_numpy(patch_scores(model.index, features, k=1))
per_image = unpatch_scores(per_patch, batch_size=2)
score_grid = scores_to_grid(per_image, grid)
pair_maps = anomaly_map(score_grid.numpy(), size=224, sigma=4)
print("images       ", tuple(batch.shape))
print("features     ", tuple(features.shape))
print("patch scores ", tuple(per_patch.shape), "->", tuple(per_image.shape), "->",
      tuple(score_grid.shape), "->", pair_maps.shape)
assert per_patch.shape == (1568,) and per_image.shape == (2, 784)
assert score_grid.shape == (2, 28, 28) and pair_maps.shape == (2, 224, 224)

# %% [markdown]
# Those are the steps `PatchCore.predict` runs, so its output must match:

# %%
# NBVAL_CHECK_OUTPUT
prediction = model.predict(batch)
assert np.allclose(prediction.maps, pair_maps) and np.allclose(prediction.scores, score_grid.amax(dim=(1, 2)).numpy())
print("scores", prediction.scores.shape, "maps", prediction.maps.shape, "patch grid", prediction.patch_scores.shape)
print("good image scores lower than the defective one:", bool(prediction.scores[0] < prediction.scores[1]))

# %% [markdown]
# ## Why blur with σ = 4?
#
# Each patch score covers an 8×8-pixel cell of the image, since the grid has stride 8. Bilinear
# upsampling joins the cells with straight ramps, so the map still shows the **blockiness** of
# the 28×28 grid. Neighbouring patch features are not independent either: every patch feature
# pools a 3×3 neighbourhood, and the backbone's receptive fields overlap far beyond 8 pixels. A
# defect therefore raises the scores of a whole neighbourhood of cells. The Gaussian
# (`scipy.ndimage.gaussian_filter`, σ = 4 pixels, i.e. half a cell) smooths the blocks into one
# blob that matches the smooth outline of a real defect better, and it damps single noisy cells.

# %%
upsampled = upsample_scores(score_grid.numpy(), size=224)
fig, axes = plt.subplots(1, 4, figsize=(13, 3.4))
show_image(axes[0], batch[1])
draw_mask_contour(axes[0], masks[example])
axes[0].set_title("image + ground truth")
panels = [(score_grid[1].numpy(), "patch scores 28×28"), (upsampled[1], "bilinear 224×224"),
          (pair_maps[1], "+ Gaussian σ = 4")]
vmin, vmax = shared_scale(upsampled[1])
for ax, (image, title) in zip(axes[1:], panels):
    ax.imshow(image, cmap="jet", vmin=vmin, vmax=vmax, interpolation="nearest")
    ax.set_title(title)
    ax.set_axis_off()
fig.tight_layout()

# %% [markdown]
# ## Heat maps on defective images
#
# One defective image of each kind, with its map overlaid (one colour scale for the whole test
# set) and the ground-truth outline drawn in white.

# %%
kinds = sorted(set(test.defects) - {"good"})
vmin, vmax = shared_scale(maps)
fig, axes = plt.subplots(2, len(kinds), figsize=(3 * len(kinds), 6.2), squeeze=False)
for column, kind in enumerate(kinds):
    i = int(np.flatnonzero(np.asarray(test.defects) == kind)[0])
    show_image(axes[0, column], test_images[i])
    draw_mask_contour(axes[0, column], masks[i])
    axes[0, column].set_title(f"{kind}: ground truth")
    overlay_heatmap(axes[1, column], test_images[i], maps[i], vmin=vmin, vmax=vmax)
    draw_mask_contour(axes[1, column], masks[i])
    axes[1, column].set_title(f"score {scores[i]:.1f}")
fig.tight_layout()

# %% [markdown]
# Where the defect changes the texture strongly (contamination, a hole, a loose thread), the hot
# spot sits on the outline. A stain changes mostly the colour, and only a little. Its patch
# features move less, and its peak is much weaker. Notebook 05 looks at such misses more closely.
#
# ## Eq. 7: re-weighting the image score
#
# The image score so far is the largest patch score, s* (the paper's eq. 6). The paper then scales
# it (eq. 7). Let m_test* be the most anomalous test patch and m* its nearest bank entry. Let
# N_b(m*) be m*'s b nearest neighbours in the bank. Then
#
# $$s = \Big(1 - \frac{\exp\lVert m^{test,*} - m^*\rVert}{\sum_{m \in N_b(m^*) \cup \{m^*\}} \exp\lVert m^{test,*} - m\rVert}\Big)\, s^*.$$
#
# The weight is one minus a softmax over b + 1 distances. m* is the closest of them, so its
# softmax share is the smallest, at most 1/(b+1). The weight is therefore in **[b/(b+1), 1)**.
# If m*'s neighbours are about as close to the test patch as m* itself, m* sits in a dense,
# well-covered region, the share is near 1/(b+1), and the score is damped the most. If they are
# much farther (m* is a rare normal feature), the weight approaches 1. The idea: a large distance
# next to a rare bank entry is more telling than one next to a crowded entry.
#
# **The reference code does not implement eq. 7**: its image score is the plain maximum. `pcnotes`
# has it as `reweighted_image_scores` (and `PatchCoreConfig(reweight=b)`), off by default like
# the reference.

# %%
B = 3
reweighted = reweighted_image_scores(faiss_index, test_features, batch_size=len(test_images), b=B)
weights = reweighted / scores
assert reweighted.shape == scores.shape == (n_test,)
assert np.all((weights >= B / (B + 1) - 1e-6) & (weights < 1))
print(f"weights lie in [{weights.min():.3f}, {weights.max():.3f}], inside [{B / (B + 1):.3f}, 1)")
auroc_plain, auroc_reweighted = image_auroc(labels, scores), image_auroc(labels, reweighted)
print(f"image AUROC  b=0 (max, reference): {auroc_plain:.3f}   b={B} (eq. 7): {auroc_reweighted:.3f}")
assert auroc_plain > 0.85 and auroc_reweighted > 0.85

# %%
fig, ax = plt.subplots(figsize=(5.5, 4.5))
for label, colour, name in ((0, "tab:green", "good"), (1, "tab:red", "defective")):
    chosen = labels == label
    ax.scatter(scores[chosen], reweighted[chosen], c=colour, label=name, s=25)
line = np.array([scores.min(), scores.max()])
ax.plot(line, line, "k:", lw=1, label="weight 1")
ax.plot(line, line * B / (B + 1), "k--", lw=1, label=f"weight {B}/{B + 1}")
ax.set_xlabel("s* = max patch score (eq. 6)")
ax.set_ylabel(f"eq. 7 score, b = {B}")
ax.legend(fontsize=8)
fig.tight_layout()

# %% [markdown]
# The points lie between the two lines. On this data the weights differ too little between good
# and defective images to separate them better. Compare the two AUROCs printed above: the
# re-weighting does not improve detection here, and can cost a little when it damps a faint
# defect more than a good image. The paper reports small gains on MVTec AD. Eq. 7 is a
# correction for bank entries of very different density, and our procedurally drawn textures
# have few rare normal features to correct for. `pcnotes` keeps it as an option, off by default.
#
# ## Normalising heat maps: over the test set, or each on its own?
#
# Heat maps are shown on a [0, 1] colour scale. The reference code min-max normalises **over the
# whole test set**: one minimum and one maximum for all maps, so the maps stay comparable and a
# clean image stays cool. Normalising **each map on its own** stretches every map to the full
# range, so the least normal spot of a perfectly good image turns bright red.

# %%
good = int(np.flatnonzero(labels == 0)[np.argmin(scores[labels == 0])])  # the cleanest good image
whole_set = normalize_maps(maps, per_image=False)
per_image_maps = normalize_maps(maps, per_image=True)
fig, axes = plt.subplots(2, 3, figsize=(9.5, 6.4))
for row, (i, name) in enumerate(((good, "good"), (example, test.defects[example]))):
    show_image(axes[row, 0], test_images[i])
    draw_mask_contour(axes[row, 0], masks[i])
    axes[row, 0].set_title(f"{name}, score {scores[i]:.1f}")
    for column, (normalised, how) in enumerate(((whole_set, "whole test set"), (per_image_maps, "per image")), 1):
        overlay_heatmap(axes[row, column], test_images[i], normalised[i], vmin=0, vmax=1)
        axes[row, column].set_title(f"{how}: max {normalised[i].max():.2f}")
fig.tight_layout()

# %%
# NBVAL_CHECK_OUTPUT
assert per_image_maps[good].max() == 1.0  # every map reaches 1 when normalised on its own
assert whole_set[good].max() < whole_set[example].max()
print("per image: the good image's map reaches 1.0:", bool(per_image_maps[good].max() == 1.0))
print("whole set: the good image stays below the defective one:", bool(whole_set[good].max() < whole_set[example].max()))

# %% [markdown]
# Per-image maps answer "where is this image *least* normal?" That question always has an answer,
# even for a flawless part. Whole-set maps answer "how abnormal is this spot compared with
# everything else we tested?" A colour scale fixed once (e.g. over the whole test set, or from
# validation data) is the honest choice for showing results.
#
# ## Summary
#
# * A patch score is the distance to the nearest memory-bank entry. faiss and torch give the same
#   distances to 1e-4.
# * The reference scores with faiss's **squared** L2 distances. Rankings and image AUROC are
#   unchanged, but the maps get more contrast, and everything that mixes scores gives different
#   numbers. `pcnotes` uses the Euclidean distance unless `squared=True`.
# * Shapes: `(1568,) -> (2, 784) -> (2, 28, 28) -> (2, 224, 224)`. The image score is the maximum
#   patch score.
# * The Gaussian blur (σ = 4) removes the 8-pixel blockiness of the patch grid.
# * Eq. 7 scales the image score by a weight in [b/(b+1), 1). The reference code skips it, and on
#   this data it does not help.
# * Normalise maps over the whole test set (or with a fixed scale), not per image.
#
# ## Exercises
#
# 1. **k neighbours.** Score the test set with the mean distance to the k = 3 nearest bank entries
#    (`patch_scores(faiss_index, test_features, k=3)`). Compute the image AUROC and pixel AUROC
#    and compare them with k = 1.
# 2. **How much blur?** Compute the pixel AUROC of the maps for σ ∈ {0, 2, 4, 8}. Which σ is best
#    here, and why does too much blur hurt?

# %% [markdown]
# ### Solution 1

# %%
k3 = patch_scores(faiss_index, test_features, k=3)[:, None]  # (N, 1), as maps_from expects
k3_scores, k3_maps = maps_from(k3)
print(f"k=1: image AUROC {auroc_plain:.3f}, pixel AUROC {pixel_auroc(masks, maps):.3f}")
print(f"k=3: image AUROC {image_auroc(labels, k3_scores):.3f}, pixel AUROC {pixel_auroc(masks, k3_maps):.3f}")

# %% [markdown]
# With a 1254-entry bank the three nearest entries are close together, so the scores hardly
# change. k matters more when the bank is small (1 % coresets) or noisy.
#
# ### Solution 2

# %%
test_grid = scores_to_grid(unpatch_scores(torch.from_numpy(faiss_distances[:, 0]), len(test_images)), grid).numpy()
for sigma in (0, 2, 4, 8):
    print(f"sigma {sigma}: pixel AUROC {pixel_auroc(masks, anomaly_map(test_grid, sigma=sigma)):.4f}")

# %% [markdown]
# Up to σ = 4 the pixel AUROC hardly moves. The blur's main job is to remove the grid's
# blockiness, and it does not cost accuracy. Too much blur (σ = 8) spreads a small defect's peak
# over its good surroundings and shaves the peak itself, so pixel AUROC drops. Thin defects such
# as threads suffer first.
