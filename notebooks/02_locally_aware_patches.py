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
# **Learning goals.** After this notebook you can
#
# 1. explain what `torch.nn.functional.unfold` cuts out of a feature map, including the zero
#    padding at the borders, and why PatchCore describes every position by its **3×3
#    neighbourhood**;
# 2. follow every reshape and permute that aligns `layer3`'s 14×14 grid to `layer2`'s 28×28 grid,
#    and picture what bilinear interpolation with `align_corners=False` does;
# 3. compute the shapes from the two feature maps down to the `(N, 1024)` patch features and
#    the memory bank, without running anything;
# 4. write down the closed form of the two average pools (mean mapper and aggregator), and check
#    it numerically.
#
# These are stages 2–4 of the data flow:
# `{layer2, layer3} → patchify → align → mean map + aggregate → (N, 1024)`.
#
# Every shape of the walk-through table for `wide_resnet50_2`, two 224×224 images and the layers
# `layer2` + `layer3` is printed below. As in notebook 01, the network has **random weights**,
# because the ImageNet ones cannot be downloaded here. The shapes are the same as with the real
# weights.

# %%
# %matplotlib inline
import math

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F

from pcnotes.align import align_patches
from pcnotes.backbone import DEFAULT_LAYERS, FeatureExtractor, load_backbone
from pcnotes.data import image_transform, list_categories, list_defects, load_images
from pcnotes.embedding import aggregate, embed, mean_map
from pcnotes.patches import patchify
from pcnotes.synth import ensure_default_dataset

torch.manual_seed(0)
plt.rcParams["figure.dpi"] = 80

# %% [markdown]
# ## The two feature maps (stage 1, notebook 01)

# %%
# NBVAL_CHECK_OUTPUT
root = ensure_default_dataset(seed=0)
categories = list_categories(root)  # from the folders, so this also runs on MVTec AD
CATEGORY = categories[min(1, len(categories) - 1)]  # the second one: tiles in the embedded set
DEFECT = list_defects(root, CATEGORY)[-1]  # the last one: stain in the embedded tiles
paths = [root / CATEGORY / "train" / "good" / "000.png", root / CATEGORY / "test" / DEFECT / "000.png"]
images = load_images(paths, image_transform(resize=256, crop=224))
wrn, weights = load_backbone("wide_resnet50_2", weights="random", seed=0)
# layer1 is kept aside for the last exercise; it costs nothing extra, the pass stops after layer3
all_maps = FeatureExtractor(wrn, ("layer1", "layer2", "layer3"))(images)
feature_maps = {name: all_maps[name] for name in ("layer2", "layer3")}
layer2, layer3 = feature_maps["layer2"], feature_maps["layer3"]
print("weights:", weights)
print("layer2:", tuple(layer2.shape))
print("layer3:", tuple(layer3.shape))
assert layer2.shape == (2, 512, 28, 28) and layer3.shape == (2, 1024, 14, 14)

# %% [markdown]
# ## What `unfold` extracts: a tiny example
#
# Take one image with one channel, 4×4, holding the numbers 1…16 (so that a padded 0 is
# easy to spot). `unfold` with kernel 3, stride 1 and padding 1 slides a 3×3 window over every
# one of the 16 positions. It writes each window out as a column of 9 numbers, so the result has
# shape `(B, C·3·3, H·W) = (1, 9, 16)`. At the border the window sticks out of the map, and the
# missing values are **zeros**. They are real inputs from now on: they take part in every
# average later, exactly as in the reference code.

# %%
# NBVAL_CHECK_OUTPUT
tiny = torch.arange(1.0, 17.0).reshape(1, 1, 4, 4)
columns = F.unfold(tiny, kernel_size=3, stride=1, padding=1)
print("input (1, 1, 4, 4):\n", tiny[0, 0].int())
print("unfold ->", tuple(columns.shape))
for row, col in [(0, 0), (1, 1), (3, 2)]:
    position = row * 4 + col  # columns run row by row over the grid
    print(f"window around ({row}, {col}) = column {position}:\n", columns[0, :, position].reshape(3, 3).int())

# %% [markdown]
# Position (1, 1) is an inner one: its window is the real 3×3 neighbourhood. The corner (0, 0) keeps
# only 4 real values, and the other 5 are padding. This is what PatchCore calls a **locally aware
# patch feature**: the feature at a position together with its neighbours.
#
# **Why bother?** One position of `layer2` already summarises an image region through its
# receptive field. Gathering the 3×3 neighbourhood (later averaged, see below) lets each patch
# feature take in a bit more context, such as the texture around a defect. It does this
# **without** lowering the resolution. A deeper layer or a stride of 2 would also enlarge the
# context, but they halve the grid, and a coarse grid cannot localise small defects. The paper's
# ablation settled on p = 3: a larger neighbourhood mixes more of the surroundings into every
# patch, so a small defect gets diluted.

# %% [markdown]
# ## Stage 2: patchify both layers
#
# `layer2`: every column has 512·3·3 = 4608 values, for 28·28 = 784 positions. `patchify`
# reshapes each column back into `(C, p, p)` and puts the positions first, so that "one row = one
# patch". That order lets us later flatten images and positions into one list of patches.

# %%
# NBVAL_CHECK_OUTPUT
unfolded = F.unfold(layer2, kernel_size=3, stride=1, padding=1)
print("unfold:  ", tuple(layer2.shape), "->", tuple(unfolded.shape))
by_hand = unfolded.reshape(2, 512, 3, 3, 784).permute(0, 4, 1, 2, 3)  # (B, C, p, p, HW) -> (B, HW, C, p, p)
patches2, grid2 = patchify(layer2, patch_size=3)
print("patchify:", tuple(unfolded.shape), "->", tuple(patches2.shape), " grid", grid2)
assert torch.equal(patches2, by_hand)
assert unfolded.shape == (2, 4608, 784) and patches2.shape == (2, 784, 512, 3, 3)

# %%
# NBVAL_CHECK_OUTPUT
patches3, grid3 = patchify(layer3, patch_size=3)
print("layer3 patchify:", tuple(layer3.shape), "->", tuple(patches3.shape), " grid", grid3)
assert patches3.shape == (2, 196, 1024, 3, 3) and grid3 == (14, 14)

# %% [markdown]
# Note the order: `layer3` is cut into patches on **its own** 14×14 grid first, and only then
# resized. That is what the reference code does, and `pcnotes` keeps this order so that its
# features match the reference's.
#
# ## Stage 3: align layer3's patches to the 28×28 grid
#
# To put a `layer2` patch and a `layer3` patch side by side, both need the same grid. Every one of
# layer3's 1024·3·3 = 9216 patch entries is a 14×14 map over the grid. Each of these small maps is
# resized to 28×28 with bilinear interpolation. Here are the steps, in the reference's order:

# %%
# NBVAL_CHECK_OUTPUT
step = patches3.reshape(2, 14, 14, 1024, 3, 3)
print("split the grid:          ", tuple(step.shape))
step = step.permute(0, 3, 4, 5, 1, 2)
print("grid dims last:          ", tuple(step.shape))
step = step.reshape(-1, 1, 14, 14)
print("one 14x14 map per entry: ", tuple(step.shape), f"= 2*1024*3*3 = {2 * 1024 * 9} maps")
step = F.interpolate(step, size=(28, 28), mode="bilinear", align_corners=False)
print("bilinear to 28x28:       ", tuple(step.shape))
step = step.reshape(2, 1024, 3, 3, 28, 28)
print("back to entries:         ", tuple(step.shape))
step = step.permute(0, 4, 5, 1, 2, 3)
print("grid dims first:         ", tuple(step.shape))
step = step.reshape(2, 784, 1024, 3, 3)
print("flatten the grid:        ", tuple(step.shape))

aligned3 = align_patches(patches3, grid3, grid2)
assert torch.equal(aligned3, step) and aligned3.shape == (2, 784, 1024, 3, 3)

# %% [markdown]
# ### What the bilinear resize does
#
# Left: one entry of layer3's patches, the centre of channel 0, on its 14×14 grid. Right: the
# same after the resize to 28×28. Nothing new is invented: each new cell is a weighted mean of
# its nearest old cells.
#
# With `align_corners=False`, pixels are treated as little squares, and the *centres* of the
# squares line up. Output pixel `j` of 28 samples the input at position `(j + 0.5) · 14/28 − 0.5
# = j/2 − 0.25`, measured in input pixel indices. So the outputs sit a quarter pixel on either
# side of each input centre, and each output is 3/4 of the nearest input plus 1/4 of the next
# one. At the borders the position (−0.25, or 13.25) lies outside, and it is clamped to the edge
# pixel. The 1-D profile on the right shows one row of the map.

# %%
# NBVAL_CHECK_OUTPUT
small = patches3[1, :, 0, 1, 1].reshape(14, 14)  # image 1, channel 0, centre of the 3x3 patch
large = aligned3[1, :, 0, 1, 1].reshape(28, 28)
positions = (torch.arange(28) + 0.5) * 14 / 28 - 0.5
print("sampling positions of the first outputs:", [round(x, 2) for x in positions[:6].tolist()], "...")
print("and of the last ones:                   ", "...", [round(x, 2) for x in positions[-3:].tolist()])
assert torch.allclose(large[5, 9], 0.75 * 0.75 * small[2, 4] + 0.75 * 0.25 * small[2, 5]
                      + 0.25 * 0.75 * small[3, 4] + 0.25 * 0.25 * small[3, 5])  # j=5 -> 2.25, j=9 -> 4.25

# %%
row = 7
fig, axes = plt.subplots(1, 3, figsize=(12, 3.6), gridspec_kw={"width_ratios": [1, 1, 1.7]})
vmin, vmax = small.min().item(), small.max().item()
axes[0].imshow(small, vmin=vmin, vmax=vmax, cmap="viridis")
axes[0].set_title("layer3 entry, 14×14", fontsize=9)
axes[1].imshow(large, vmin=vmin, vmax=vmax, cmap="viridis")
axes[1].set_title("bilinear to 28×28 (align_corners=False)", fontsize=9)
for ax in axes[:2]:
    ax.set_xticks([]), ax.set_yticks([])
axes[0].axhline(row, color="white", lw=0.8)
axes[1].axhline(2 * row + 0.5, color="white", lw=0.8)

# one row of the 2-D map is a 1-D linear interpolation of the two input rows around it;
# to show the sampling positions we resize that input row alone with mode="linear"
signal = small[row]
resized = F.interpolate(signal[None, None], size=28, mode="linear", align_corners=False)[0, 0]
axes[2].plot(torch.arange(14), signal, "o-", color="tab:blue", label="14 input samples (at 0, 1, …, 13)")
axes[2].plot(positions, resized, "x", color="tab:orange", label="28 outputs (at j/2 − 0.25)")
axes[2].axvspan(-0.5, 0, color="grey", alpha=0.2)
axes[2].axvspan(13, 13.5, color="grey", alpha=0.2, label="clamped to the edge sample")
axes[2].set_xlabel("position in input pixels")
axes[2].set_title(f"row {row} of the 14×14 map, resized alone", fontsize=9)
axes[2].legend(fontsize=7)
fig.tight_layout()

# %% [markdown]
# ## Stage 4a: flatten over the batch
#
# From here on, images don't matter: each of the 2 · 784 = 1568 positions is one patch, and
# PatchCore treats them all as one list.

# %%
# NBVAL_CHECK_OUTPUT
flat2 = patches2.reshape(-1, 512, 3, 3)
flat3 = aligned3.reshape(-1, 1024, 3, 3)
print("layer2 patches:", tuple(flat2.shape))
print("layer3 patches:", tuple(flat3.shape))
assert flat2.shape == (1568, 512, 3, 3) and flat3.shape == (1568, 1024, 3, 3)

# %% [markdown]
# ## Stage 4b: mean mappers and the aggregator
#
# The two layers give patches of different sizes (4608 and 9216 numbers). The **mean mapper**
# flattens each layer's patch and average-pools it to `pretrain_dim = 1024` numbers with
# `adaptive_avg_pool1d`. Stacking the layers gives `(N, 2, 1024)`. The **aggregator** flattens
# that to 2048 numbers and pools again, to `target_dim = 1024`: one vector per patch.

# %%
# NBVAL_CHECK_OUTPUT
mapped2 = mean_map(flat2, dim=1024)
mapped3 = mean_map(flat3, dim=1024)
stacked = torch.stack([mapped2, mapped3], dim=1)
features = aggregate(stacked, dim=1024)
print("mean map layer2:", tuple(flat2.shape), "->", tuple(mapped2.shape))
print("mean map layer3:", tuple(flat3.shape), "->", tuple(mapped3.shape))
print("stacked:        ", tuple(stacked.shape))
print("aggregated:     ", tuple(features.shape))
assert stacked.shape == (1568, 2, 1024) and features.shape == (1568, 1024)

# %% [markdown]
# ### The memory bank, by arithmetic
#
# Fitting PatchCore means doing the above for every normal training image and keeping all the
# rows. For 100 training images that is 100 · 784 patches. A 10 % coreset (notebook 03) keeps
# `int(N · 0.1)` of them.

# %%
# NBVAL_CHECK_OUTPUT
n_images, per_image, dim = 100, 28 * 28, 1024
bank = (n_images * per_image, dim)
coreset = (int(bank[0] * 0.1), dim)
print(f"memory bank of {n_images} images: {bank}  = {bank[0] * dim * 4 / 2**20:.0f} MiB of float32")
print(f"after a 10 % coreset:       {coreset}  = {coreset[0] * dim * 4 / 2**20:.1f} MiB")

# %% [markdown]
# ## A closer look: what the two pools compute
#
# `adaptive_avg_pool1d(x, out)` splits the `L` inputs into `out` windows. Window `j` runs from
# `floor(j·L/out)` to `ceil((j+1)·L/out)`, end excluded. For layer2, `L = 4608` and `out = 1024`,
# so `L/out = 4.5` and the windows are **5 wide and overlap by one**:

# %%
# NBVAL_CHECK_OUTPUT
def pool_windows(length: int, out: int, count: int) -> list[tuple[int, int]]:
    """The first `count` windows [start, end) of adaptive_avg_pool1d(length -> out)."""
    return [(math.floor(j * length / out), math.ceil((j + 1) * length / out)) for j in range(count)]


print("4608 -> 1024:", pool_windows(4608, 1024, 6), "...")
print("2048 -> 1024:", pool_windows(2048, 1024, 4), "...")
print("9216 -> 1024:", pool_windows(9216, 1024, 3), "...")

# %% [markdown]
# A flattened layer2 patch stores channel `c` at positions `9c … 9c+8` (its 3×3 entries, row by
# row). So output `2c` averages entries 0–4 of channel `c`, and output `2c+1` averages entries
# 4–8: the centre (entry 4) is in both windows. Below is the pooling matrix for the first 5
# channels: output `j` (rows) as a weighted sum of input `i` (columns). We get it by pooling the
# identity matrix, because a linear map applied to the basis vectors gives its own matrix.

# %%
pool = F.adaptive_avg_pool1d(torch.eye(45, 4608)[:, None, :], 1024)[:, 0, :10].T  # (10 outputs, 45 inputs)
fig, ax = plt.subplots(figsize=(9, 2.6))
ax.imshow(pool, cmap="Greys", aspect="auto")
for boundary in range(9, 45, 9):
    ax.axvline(boundary - 0.5, color="tab:red", lw=1)
ax.set_xlabel("input: flattened layer2 patch entries 0…44 (red lines: channel boundaries, 9 entries each)")
ax.set_ylabel("output j")
ax.set_title("4608 → 1024 mean mapper: each output averages 5 inputs (weight 0.2)", fontsize=9)
fig.tight_layout()

# %% [markdown]
# The aggregator pools 2048 → 1024 with windows of exactly 2, `[2k, 2k+2)`, with no overlap. The
# first 1024 of the 2048 inputs come from layer2 and the last 1024 from layer3, so a window never
# straddles the two layers. Layer2 and layer3 are **never averaged together**. Putting it all
# together:
#
# * dims 0–511: output `c` = mean of layer2 outputs `2c` and `2c+1`, both from channel `c`.
#   That is a 3×3 kernel on channel `c` with **0.2 at the centre and 0.1 around it**.
# * dims 512–1023: layer3 has 9216 = 9 · 1024 entries, so its mean mapper averages each
#   channel's 3×3 patch (weight 1/9). The aggregator then averages **pairs of layer3 channels**
#   `2m, 2m+1`, giving weight 1/18 on each of their 18 entries.
#
# The same kernel, read off the composed linear map by pushing each entry of channel 0 through
# it on its own:

# %%
# NBVAL_CHECK_OUTPUT
one_hots = torch.zeros(9, 512, 3, 3)
one_hots[:, 0] = torch.eye(9).reshape(9, 3, 3)  # entry e of channel 0 set to 1, everything else 0
through = aggregate(torch.stack([mean_map(one_hots), mean_map(torch.zeros(9, 1024, 3, 3))], dim=1))
print("weight of each channel-0 entry on output 0:\n", through[:, 0].reshape(3, 3).numpy().round(4))
print("on output 1 (channel 1's):", through[:, 1].abs().max().item())

# %% [markdown]
# Now check the closed form on the real 1568 patches:

# %%
# NBVAL_CHECK_OUTPUT
kernel = torch.full((3, 3), 0.1)
kernel[1, 1] = 0.2
closed_form_2 = (flat2 * kernel).sum(dim=(2, 3))  # (1568, 512)
closed_form_3 = flat3.mean(dim=(2, 3)).reshape(-1, 512, 2).mean(dim=2)  # pairs of channels: (1568, 512)
matches_2 = torch.allclose(features[:, :512], closed_form_2, atol=1e-5)
matches_3 = torch.allclose(features[:, 512:], closed_form_3, atol=1e-5)
print("dims 0-511 = layer2 channels with the 0.2/0.1 kernel:", matches_2)
print("dims 512-1023 = mean of layer3 channel pairs:       ", matches_3)
assert matches_2 and matches_3

# %% [markdown]
# So with these sizes, the "mean mapper + aggregator" is a **fixed linear map**: a weighted local
# average per channel, followed by pairing neighbouring channels of the deeper layer. Nothing is
# learned. The reference code writes the pools generically, and that is fine, but knowing the
# closed form shows what the 1024 numbers mean: a blurred layer2 feature next to a
# channel-halved layer3 feature.
#
# ## The library does all of this in one call
#
# `pcnotes.embedding.embed(feature_maps)` runs stages 2–4. It gives the **same tensor, bit for
# bit**, as the steps above:

# %%
# NBVAL_CHECK_OUTPUT
embedded, grid = embed(feature_maps, pretrain_dim=1024, target_dim=1024, patch_size=3)
print("embed:", tuple(embedded.shape), "grid", grid)
identical = torch.equal(embedded, features)
print("identical to the step-by-step result:", identical)
assert identical

# %% [markdown]
# ## And for the default backbone, `mobilenet_v2`?
#
# Its blocks are much thinner: `features.6` has 32 channels and `features.13` has 96. A 3×3
# patch therefore has 32·9 = **288** and 96·9 = **864** entries, fewer than 1024. The mean
# mapper still produces 1024 numbers, which means **pooling up**. Adaptive pooling then uses
# windows of 1 or 2 entries, so most outputs are plain **copies** of one entry and the rest
# average two neighbours. No information is added.

# %%
# NBVAL_CHECK_OUTPUT
for entries in (288, 864):
    widths = [end - start for start, end in pool_windows(entries, 1024, 1024)]
    print(f"{entries:4d} -> 1024: {widths.count(1)} outputs copy one entry, {widths.count(2)} average two;"
          f" first windows {pool_windows(entries, 1024, 5)}")

# %%
# NBVAL_CHECK_OUTPUT
mobilenet, _ = load_backbone("mobilenet_v2")  # shipped ImageNet weights
mobile_maps = FeatureExtractor(mobilenet, DEFAULT_LAYERS["mobilenet_v2"])(images)
mobile_features, mobile_grid = embed(mobile_maps)
for name, fmap in mobile_maps.items():
    print(f"{name}: {tuple(fmap.shape)} -> patches of {fmap.shape[1] * 9} entries")
print("default-backbone embedding:", tuple(mobile_features.shape), "grid", mobile_grid)
assert mobile_features.shape == (1568, 1024)

# %% [markdown]
# The memory bank and every later stage see the same `(N, 1024)` shape with either backbone. But
# how many of those 1024 numbers are independent? The two pools are one linear map from the
# 288 + 864 patch entries to 1024 outputs. Push each entry through it on its own to get its
# matrix, and count its rank:

# %%
# NBVAL_CHECK_OUTPUT
basis6 = torch.cat([torch.eye(288), torch.zeros(864, 288)]).reshape(-1, 32, 3, 3)  # one entry of features.6 at a time
basis13 = torch.cat([torch.zeros(288, 864), torch.eye(864)]).reshape(-1, 96, 3, 3)  # ... then of features.13
pool_matrix = aggregate(torch.stack([mean_map(basis6), mean_map(basis13)], dim=1))  # (1152 entries, 1024 outputs)
print("linear map:", tuple(pool_matrix.shape), " rank:", torch.linalg.matrix_rank(pool_matrix).item())
print("rank of the features.6 half:", torch.linalg.matrix_rank(pool_matrix[:288, :512]).item(),
      " of the features.13 half:", torch.linalg.matrix_rank(pool_matrix[288:, 512:]).item())

# %% [markdown]
# So for `mobilenet_v2` the 1024 numbers span at most 288 + 512 = 800 directions. The
# features.6 half repeats its 288 entries in 512 slots, and the features.13 half squeezes 864
# entries into 512. The repeats also weight the entries unequally in the distance: an entry that
# lands in more output slots counts more. This is harmless for a nearest-neighbour search, but
# good to know before you call the features "1024-dimensional".
#
# ## Summary
#
# | step | shape (wide_resnet50_2, 2 images) |
# | --- | --- |
# | layer2, layer3 | (2, 512, 28, 28), (2, 1024, 14, 14) |
# | unfold 3×3 → patchify | (2, 4608, 784) → (2, 784, 512, 3, 3); layer3 (2, 196, 1024, 3, 3) |
# | align layer3 to 28×28 | (2, 784, 1024, 3, 3) |
# | flatten over the batch | (1568, 512, 3, 3), (1568, 1024, 3, 3) |
# | mean map per layer, stacked | (1568, 2, 1024) |
# | aggregate | (1568, 1024) |
# | 100 training images, then a 10 % coreset | (78400, 1024) → (7840, 1024) |
#
# * `unfold` gathers each position's 3×3 neighbourhood, zero-padded at the borders. The
#   neighbourhood adds context without losing resolution.
# * The deeper layer is patchified on its own grid, then resized bilinearly
#   (`align_corners=False`: samples at `j/2 − 0.25`, clamped at the edges).
# * At 1024/1024 the two pools are a fixed linear map: a 0.2/0.1 3×3 kernel per layer2 channel,
#   and averages of layer3 channel pairs. The two layers are never mixed.
#
# ## Exercises
#
# 1. With `patch_size=5`, what are the shapes after `unfold` and after `patchify` for layer2, and
#    after `patchify` for layer3? What is the final embedding shape? How wide are the mean
#    mapper's windows for layer2?
# 2. Use **three** layers, `layer1` + `layer2` + `layer3`. `layer1` has stride 4 and 256
#    channels. Which grid do the patches end up on, and what are the stacked and aggregated
#    shapes for our two images? How much larger is the memory bank per image?
#
# Write your answers down, then run the solution.

# %% [markdown]
# ### Solution

# %%
# NBVAL_CHECK_OUTPUT
# 1. p = 5: 512*25 = 12800 values per column; the grid stays 28x28 because the padding is 2.
print("p=5 unfold:   ", tuple(F.unfold(layer2, kernel_size=5, padding=2).shape))
print("p=5 layer2:   ", tuple(patchify(layer2, patch_size=5)[0].shape))
print("p=5 layer3:   ", tuple(patchify(layer3, patch_size=5)[0].shape))
print("p=5 embedding:", tuple(embed(feature_maps, patch_size=5)[0].shape))
print("p=5 windows 12800 -> 1024:", sorted({end - start for start, end in pool_windows(12800, 1024, 1024)}), "entries wide")

# 2. layer1 comes first, so everything is aligned to its 56x56 grid: 2*3136 = 6272 patches;
#    stacked (6272, 3, 1024), aggregated (6272, 1024); 3136 rows per image instead of 784 (4x).
three_maps = all_maps  # {"layer1": (2, 256, 56, 56), "layer2": ..., "layer3": ...}, from the first cell
patched = [patchify(fmap) for fmap in three_maps.values()]  # [(patches, grid), ...]
three_grid = patched[0][1]
per_layer = [mean_map(align_patches(p, g, three_grid).flatten(0, 1)) for p, g in patched]
three_stacked = torch.stack(per_layer, dim=1)
three_features = aggregate(three_stacked)
print("layer1:", tuple(three_maps["layer1"].shape), "-> grid", three_grid)
print("3 layers: stacked", tuple(three_stacked.shape), "-> aggregated", tuple(three_features.shape))
print("rows per image:", three_grid[0] * three_grid[1], "instead of", 28 * 28)
