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
# # 02 · Locally aware patches: from two feature maps to one vector per patch
#
# **19 minutes** · previous: [01 · Layer hooks](01_layer_hooks.ipynb) ·
# next: [03 · Coreset](03_coreset.ipynb)
#
# **Learning goals.** After this notebook you can
#
# 1. cut a feature map into 3×3 patches with `unfold`;
# 2. align `layer3`'s patches onto `layer2`'s grid;
# 3. follow every shape down to one vector per patch, for both patch features.
#
# Stages 2–4: `{layer2, layer3} → patchify → align → mean map + aggregate`, the paper's eqs. 1–3,
# with the shapes of `wide_resnet50_2` (random weights) for two 224×224 images.

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
import torch
import torch.nn.functional as F

from pcnotes import (
    DEFAULT_PATCH_FEATURE,
    PatchCoreConfig,
    course,
    ensure_default_dataset,
    image_transform,
    list_categories,
    list_defects,
    load_images,
)
from pcnotes.stages import (
    DEFAULT_LAYERS,
    FeatureExtractor,
    aggregate,
    embed,
    load_backbone,
    mean_map,
    pooled_concat,
)

_ = torch.manual_seed(0)

# %% [markdown]
# ## The two feature maps of a normal and a defective image (notebook 01)

# %%
# NBVAL_CHECK_OUTPUT
root = ensure_default_dataset(seed=0)
CATEGORY = list_categories(root)[0]  # from the folders: fabric in the embedded set
DEFECT = list_defects(root, CATEGORY)[0]  # contamination in the embedded fabric
train_image = sorted((root / CATEGORY / "train" / "good").glob("*.png"))[0]
test_image = sorted((root / CATEGORY / "test" / DEFECT).glob("*.png"))[0]
images = load_images([train_image, test_image], image_transform(resize=256, crop=224))
wrn, weights = load_backbone("wide_resnet50_2", weights="random", seed=0)
feature_maps = FeatureExtractor(wrn, ("layer2", "layer3"))(images)
layer2, layer3 = feature_maps["layer2"], feature_maps["layer3"]
print("weights:", weights)
print("layer2:", tuple(layer2.shape), " layer3:", tuple(layer3.shape))
assert layer2.shape == (2, 512, 28, 28) and layer3.shape == (2, 1024, 14, 14)

# %% [markdown]
# ## What `unfold` cuts out
#
# A 4×4 map holding 1…16, so that padding is easy to spot. `unfold` with kernel 3, stride 1 and
# padding 1 writes the 3×3 window around each of the 16 positions as a column of 9 numbers.

# %%
# NBVAL_CHECK_OUTPUT
tiny = torch.arange(1.0, 17.0).reshape(1, 1, 4, 4)
columns = F.unfold(tiny, kernel_size=3, stride=1, padding=1)
print("unfold:", tuple(tiny.shape), "->", tuple(columns.shape))
for row, col in [(0, 0), (1, 1)]:
    print(f"window around ({row}, {col}), column {row * 4 + col}:\n", columns[0, :, row * 4 + col].reshape(3, 3).int())

# %% [markdown]
# At the corner (0, 0), 5 of the 9 values are padded **zeros**, and they count in every average
# that follows. A position with its neighbourhood (the paper's eq. 1) is a **locally aware
# patch**: context without a coarser grid, which could not localise a small defect.
#
# ## Exercise: patchify

# %% tags=["solution"]
def patchify(features: torch.Tensor, patch_size: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, H*W, C, p, p): one p x p patch per grid position.

    Use F.unfold (stride 1, zero padding p // 2, so the grid keeps its size), then a
    reshape and a permute that put the positions before the channels.
    """
    batch, channels, height, width = features.shape
    columns = F.unfold(features, kernel_size=patch_size, padding=patch_size // 2)
    return columns.reshape(batch, channels, patch_size, patch_size, height * width).permute(0, 4, 1, 2, 3)


# %%
# NBVAL_CHECK_OUTPUT
patchify = course.adopt("patchify", patchify, course.check_patchify(patchify))

# %% [markdown]
# `course.adopt` keeps your function if it passes (and saves it for 05's capstone); if not, it
# says so and the library's runs.
#
# **Predict before you run:** the shape of `unfold` on `layer2`, and of its patches?

# %% [markdown] tags=["solution"]
# Each column holds 512·3·3 = 4608 values, one per position of the 28·28 = 784: `(2, 4608, 784)`,
# then `(2, 784, 512, 3, 3)`. Layer3 gives `(2, 196, 1024, 3, 3)` on its 14×14 grid.

# %%
# NBVAL_CHECK_OUTPUT
unfolded = F.unfold(layer2, kernel_size=3, stride=1, padding=1)
patches2, grid2 = patchify(layer2, 3), tuple(layer2.shape[-2:])  # stride 1: the grid keeps its size
patches3, grid3 = patchify(layer3, 3), tuple(layer3.shape[-2:])
print("layer2 unfold:", tuple(unfolded.shape), "-> patches", tuple(patches2.shape), "grid", grid2)
print("layer3 patches:", tuple(patches3.shape), "grid", grid3)
assert unfolded.shape == (2, 4608, 784) and patches2.shape == (2, 784, 512, 3, 3)
assert patches3.shape == (2, 196, 1024, 3, 3) and grid3 == (14, 14)

# %% [markdown]
# ## Exercise: align layer3 onto the layer2 grid
#
# Layer3 is patchified on **its own** 14×14 grid first; only then are the patches resized. Each of
# the 1024·3·3 entries of a patch is a 14×14 map over the grid, and each such map is resized to
# 28×28 with bilinear interpolation, `align_corners=False` (pixel centres line up). Where the 28
# samples fall:
# [deeper/02_pooling_arithmetic](deeper/02_pooling_arithmetic.ipynb).

# %% tags=["solution"]
def align(patches: torch.Tensor, grid: tuple, target_grid: tuple) -> torch.Tensor:
    """(B, h*w, C, p, p) on grid (h, w) -> (B, H*W, C, p, p) on target_grid (H, W).

    Move the grid axes last, resize every h x w map bilinearly (align_corners=False),
    then put the grid axes first again and flatten them.
    """
    batch, _, channels, p, _ = patches.shape
    maps = patches.reshape(batch, *grid, channels, p, p).permute(0, 3, 4, 5, 1, 2).reshape(-1, 1, *grid)
    resized = F.interpolate(maps, size=tuple(target_grid), mode="bilinear", align_corners=False)
    resized = resized.reshape(batch, channels, p, p, *target_grid).permute(0, 4, 5, 1, 2, 3)
    return resized.reshape(batch, -1, channels, p, p)


# %%
# NBVAL_CHECK_OUTPUT
align = course.adopt("align", align, course.check_align(align))

# %%
# NBVAL_CHECK_OUTPUT
aligned3 = align(patches3, grid3, grid2)
print("layer3 aligned:", tuple(aligned3.shape))
assert aligned3.shape == (2, 784, 1024, 3, 3)

# %% [markdown]
# ## Flatten over the batch
#
# Every position of every image is now one patch in one list.

# %%
# NBVAL_CHECK_OUTPUT
flat2 = patches2.reshape(-1, 512, 3, 3)
flat3 = aligned3.reshape(-1, 1024, 3, 3)
print("layer2 patches:", tuple(flat2.shape), " layer3 patches:", tuple(flat3.shape))
assert flat2.shape == (1568, 512, 3, 3) and flat3.shape == (1568, 1024, 3, 3)

# %% [markdown]
# ## Exercises for fast finishers: the mean mapper and the aggregator
#
# The **mean mapper** flattens one layer's patch and
# average-pools it to 1024 numbers with `F.adaptive_avg_pool1d`. Stacking the layers gives
# `(N, 2, 1024)`. The **aggregator** flattens that and pools again to 1024: one vector per patch.

# %% tags=["solution"]
def mean_mapper(patches: torch.Tensor, dim: int) -> torch.Tensor:
    """(N, C, p, p) -> (N, dim): flatten each patch as it comes and average-pool it adaptively to dim."""
    return F.adaptive_avg_pool1d(patches.reshape(len(patches), 1, -1), dim).squeeze(1)


# %%
# NBVAL_CHECK_OUTPUT
mean_mapper = course.adopt("mean_mapper", mean_mapper, course.check_mean_mapper(mean_mapper))

# %% tags=["solution"]
def aggregator(layer_embeddings: torch.Tensor, dim: int) -> torch.Tensor:
    """(N, L, D) -> (N, dim): put the L layer vectors one after the other and average-pool to dim."""
    n = len(layer_embeddings)
    return F.adaptive_avg_pool1d(layer_embeddings.reshape(n, 1, -1), dim).reshape(n, dim)


# %%
# NBVAL_CHECK_OUTPUT
aggregator = course.adopt("aggregator", aggregator, course.check_aggregator(aggregator))

# %% [markdown]
# Your two stages on both layers, and the library's `embed` (stages 2–4 in one call):

# %%
# NBVAL_CHECK_OUTPUT
stacked = torch.stack([mean_mapper(flat2, 1024), mean_mapper(flat3, 1024)], dim=1)
features = aggregator(stacked, 1024)
embedded, grid = embed(feature_maps, pretrain_dim=1024, target_dim=1024, patch_size=3)
same = torch.allclose(embedded, features, atol=1e-6)
print("mean mappers, stacked:", tuple(stacked.shape), " aggregated:", tuple(features.shape))
print("embed:", tuple(embedded.shape), "grid", grid, " same values:", same)
assert stacked.shape == (1568, 2, 1024) and features.shape == (1568, 1024) and same

# %% [markdown]
# Nothing here is learned: with these sizes the two pools are one fixed linear map that never
# mixes the layers. Its closed form: [deeper/02_pooling_arithmetic](deeper/02_pooling_arithmetic.ipynb).
#
# ## Two patch features, and which backbone gets which
#
# `PatchCoreConfig(patch_feature=...)` chooses:
#
# * `"mean_mapped"`: the mean mappers and aggregator above (eq. 2's f_agg in the reference);
# * `"pooled_concat"`: each layer average-pooled over 3×3, resized to the first grid, the
#   channels concatenated: one number per channel.
#
# Both on `mobilenet_v2`, whose default is the second:

# %%
# NBVAL_CHECK_OUTPUT
mobilenet, _ = load_backbone("mobilenet_v2")  # the shipped ImageNet weights
mobile_maps = FeatureExtractor(mobilenet, DEFAULT_LAYERS["mobilenet_v2"])(images)
for name, fmap in mobile_maps.items():
    print(f"{name}: {tuple(fmap.shape)}")
mean_mapped, _ = embed(mobile_maps)
pooled, pooled_grid = pooled_concat(mobile_maps)
print("mean_mapped:  ", tuple(mean_mapped.shape), " pooled_concat:", tuple(pooled.shape), "grid", pooled_grid)
print("defaults:", {name: PatchCoreConfig(backbone=name).patch_feature for name in DEFAULT_PATCH_FEATURE})
assert mean_mapped.shape == (1568, 1024) and pooled.shape == (1568, 32 + 96)

# %% [markdown]
# Why `mobilenet_v2` gets `pooled_concat`, by ranks and matrix norms:
# [deeper/02_two_patch_features](deeper/02_two_patch_features.ipynb). The counted padding zeros
# and patchifying layer3 before resizing are patchcore-inspection's choices, not the paper's;
# `pcnotes` keeps them.

# %% [markdown]
# ## Summary
#
# * Layer2 `(2, 512, 28, 28) → (2, 784, 512, 3, 3)`; layer3 patchified on 14×14, then resized:
#   `(2, 784, 1024, 3, 3)`. Flattened, mean-mapped and aggregated: `(1568, 1024)`.
# * `pooled_concat` keeps one mean per channel: `mobilenet_v2`'s default, `(1568, 128)`.
#
# Next: [03 · Coreset](03_coreset.ipynb).
