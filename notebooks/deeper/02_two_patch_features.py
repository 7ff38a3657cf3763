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
# # 02 deeper · Two patch features: what each layer gets
#
# Continues [02 · Locally aware patches](../02_locally_aware_patches.ipynb), after the two patch
# features. Reading for after class: why `mobilenet_v2` defaults to `pooled_concat`, measured by
# the rank and the squared norm of the linear map each feature applies to a layer's patch.
#
# **Learning goals.** After this notebook you can
#
# 1. show that `pooled_concat` is the mean mapper with one output per channel;
# 2. read how many independent dimensions each layer gets under each feature (the rank);
# 3. say which layer dominates the distance (the squared matrix norm), on both backbones.

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
    align_patches,
    embed,
    load_backbone,
    mean_map,
    patchify as pcnotes_patchify,
    pooled_concat,
)

_ = torch.manual_seed(0)

# %% [markdown]
# ## The two feature maps (notebook 01)
#
# One normal training image and one defective test image of a category of the data set.

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
# Nothing here is learned. With these sizes the two pools are one fixed linear map, a 3×3 kernel
# per layer2 channel and averages of layer3 channel pairs; the layers are never mixed. Its closed
# form: [02_pooling_arithmetic](02_pooling_arithmetic.ipynb).
#
# ## Two patch features, and which backbone gets which
#
# `PatchCoreConfig(patch_feature=...)` (or `--patch-feature` on the command line) chooses:
#
# * `"mean_mapped"`: the mean mappers and aggregator above, the paper's and
#   [patchcore-inspection](https://github.com/amazon-science/patchcore-inspection)'s;
# * `"pooled_concat"`: each layer's map average-pooled over 3×3 (stride 1, zero padding, the
#   zeros counted), the deeper one resized bilinearly to the first grid, the channels
#   concatenated. One number per channel.
#
# The default depends on the backbone. Here are both on the shipped `mobilenet_v2`:

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
# ## `pooled_concat` is the mean mapper with one number per channel
#
# `pooled_concat` is the same locally aware patch, averaged per channel: the mean mapper with
# `dim = C`. Pooling and the bilinear resize are both linear, so their order does not matter:

# %%
# NBVAL_CHECK_OUTPUT
shallow, deep = mobile_maps.values()
p_shallow, g_shallow = pcnotes_patchify(shallow, 3)
p_deep, g_deep = pcnotes_patchify(deep, 3)
per_channel = torch.cat([mean_map(p_shallow.flatten(0, 1), dim=32),
                         mean_map(align_patches(p_deep, g_deep, g_shallow).flatten(0, 1), dim=96)], dim=1)
same = torch.allclose(pooled, per_channel, atol=1e-5)
print("pooled_concat == per-channel mean of the aligned patches:", same)
assert same

# %% [markdown]
# ### What each layer gets
#
# Both features are linear maps from a patch's entries. Push one entry at a time through them to
# get each layer's matrix, and read off how many output dimensions it fills, how many of them
# are independent (the rank), and its share of the squared distance if every entry varied
# equally and independently (the squared matrix norm).

# %%
def layer_matrix(feature: str, channels: tuple, layer: int, p: int = 3) -> torch.Tensor:
    """Row i: the patch feature when entry i of layer `layer`'s patch is 1 and all else is 0."""
    entries = channels[layer] * p * p
    rows = []
    for start in range(0, entries, 1024):  # 1024 basis vectors at a time
        chunk = torch.zeros(min(1024, entries - start), entries)
        chunk[:, start:start + len(chunk)] = torch.eye(len(chunk))
        chunk = chunk.reshape(-1, channels[layer], p, p)
        if feature == "pooled_concat":  # one mean per channel, the layers side by side
            rows.append(torch.cat([mean_map(chunk, dim=c) if l == layer else torch.zeros(len(chunk), c)
                                   for l, c in enumerate(channels)], dim=1))
        else:  # mean_mapped: a mean mapper per layer, then the aggregator
            per_layer = [mean_map(chunk, 1024) if l == layer else torch.zeros(len(chunk), 1024)
                         for l in range(len(channels))]
            rows.append(aggregate(torch.stack(per_layer, dim=1), 1024))
    return torch.cat(rows)


# %%
# NBVAL_CHECK_OUTPUT
deeper_share = {}
print("backbone         feature        layer  channels  entries  dims  rank  share")
for backbone, channels in (("wide_resnet50_2", (512, 1024)), ("mobilenet_v2", (32, 96))):
    for feature in ("mean_mapped", "pooled_concat"):
        matrices = [layer_matrix(feature, channels, layer) for layer in range(2)]
        norms = [m.double().pow(2).sum().item() for m in matrices]
        for layer, matrix in enumerate(matrices):
            used = matrix[:, matrix.abs().sum(dim=0) > 0].double()
            rank = torch.linalg.matrix_rank(used.T @ used, hermitian=True).item()
            print(f"{backbone:16s} {feature:14s} {layer:5d} {channels[layer]:9d} {matrix.shape[0]:8d}"
                  f" {used.shape[1]:5d} {rank:5d} {norms[layer] / sum(norms):6.0%}")
        deeper_share[backbone, feature] = norms[1] / sum(norms)
for backbone, channels in (("wide_resnet50_2", (512, 1024)), ("mobilenet_v2", (32, 96))):
    ratio = deeper_share[backbone, "mean_mapped"] / deeper_share[backbone, "pooled_concat"]
    print(f"{backbone}: the deeper layer has {channels[1] // channels[0]}x the channels; mean_mapped gives it"
          f" {ratio:.2f} of the share pooled_concat gives it")
print("bank row length, mobilenet_v2: 1024 (mean_mapped) /", pooled.shape[1], "(pooled_concat) =",
      1024 // pooled.shape[1])

# %% [markdown]
# The table shows:
#
# * `mean_mapped` gives each layer half of the 1024 dimensions, whatever its channels. For
#   `wide_resnet50_2` both layers are *compressed* into their half: 4608 and 9216 entries, 512
#   independent dimensions each, and 1536 channels become 1024 numbers.
# * For `mobilenet_v2` the same map *stretches* the shallow layer: its 288 entries fill 512
#   dimensions, of which only 288 are independent, so its entries are copied and counted several
#   times. The deeper, more semantic layer has three times the channels, yet gets the smaller
#   share of the distance, half of what `pooled_concat` gives it.
# * `pooled_concat` shares in proportion to the channels, in 128 numbers for `mobilenet_v2`: a
#   bank 8 times smaller than at 1024.
#
# The mean mapper underweights the deeper layer on both backbones. That is the paper's setting
# for `wide_resnet50_2`, so `pcnotes` keeps it there. For `mobilenet_v2` the default is
# `pooled_concat`, chosen by measuring on real photographs (`benchmarks/real_data.py`, see the
# README). Notebook [05](../05_evaluation.ipynb) compares the two on the embedded data.
#
# **Reference and departures.** The counted padding zeros and patchifying layer3 before
# resizing are patchcore-inspection's choices, not the paper's. `pcnotes` keeps them, so that
# `mean_mapped` computes what the reference computes. It departs only by offering
# `pooled_concat`, anomalib's feature, and making it the narrow backbone's default.
