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
# # 02 deeper · The pooling arithmetic: windows, a closed-form kernel, and where the resize samples
#
# Continues [02 · Locally aware patches](../02_locally_aware_patches.ipynb), after the mean mappers
# and the aggregator. Reading for after class.
#
# **Learning goals.** After this notebook you can
#
# 1. list the windows of `adaptive_avg_pool1d` for any input and output length;
# 2. write the mean mapper + aggregator of `wide_resnet50_2` as a fixed 3×3 kernel per channel,
#    and check it numerically;
# 3. say where bilinear resizing with `align_corners=False` samples the 14×14 grid;
# 4. predict the shapes for another patch size and for three layers.
#
# As in the core notebook: `wide_resnet50_2` with random weights, two 224×224 images of the data
# set, layers `layer2` + `layer3`.

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
import math

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F

from pcnotes import ensure_default_dataset, image_transform, list_categories, list_defects, load_images
from pcnotes.stages import (
    FeatureExtractor,
    aggregate,
    align_patches,
    embed,
    load_backbone,
    mean_map,
    patchify,
)

_ = torch.manual_seed(0)
plt.rcParams["figure.dpi"] = 80

# %%
# NBVAL_CHECK_OUTPUT
root = ensure_default_dataset(seed=0)
category = list_categories(root)[0]  # from the folders: fabric in the embedded set
defect = list_defects(root, category)[0]  # contamination in the embedded fabric
paths = [sorted((root / category / "train" / "good").glob("*.png"))[0],
         sorted((root / category / "test" / defect).glob("*.png"))[0]]
images = load_images(paths, image_transform(resize=256, crop=224))
wrn, _ = load_backbone("wide_resnet50_2", weights="random", seed=0)
all_maps = FeatureExtractor(wrn, ("layer1", "layer2", "layer3"))(images)  # layer1 for the last exercise
feature_maps = {name: all_maps[name] for name in ("layer2", "layer3")}
patches2, grid2 = patchify(feature_maps["layer2"], 3)
patches3, grid3 = patchify(feature_maps["layer3"], 3)
aligned3 = align_patches(patches3, grid3, grid2)
flat2, flat3 = patches2.flatten(0, 1), aligned3.flatten(0, 1)
features = aggregate(torch.stack([mean_map(flat2), mean_map(flat3)], dim=1))
print("layer2 patches:", tuple(flat2.shape), " layer3 patches:", tuple(flat3.shape), " features:", tuple(features.shape))

# %% [markdown]
# ## The windows of an adaptive average pool
#
# `adaptive_avg_pool1d(x, out)` splits `L` inputs into `out` windows. Window `j` runs from
# `floor(j·L/out)` to `ceil((j+1)·L/out)`, end excluded. When `out` does not divide `L`,
# neighbouring windows share an entry.

# %%
# NBVAL_CHECK_OUTPUT
def pool_windows(length: int, out: int, count: int) -> list[tuple[int, int]]:
    """The first `count` windows [start, end) of adaptive_avg_pool1d(length -> out)."""
    return [(math.floor(j * length / out), math.ceil((j + 1) * length / out)) for j in range(count)]


for length, count in ((4608, 6), (2048, 4), (9216, 3)):
    widths = sorted({end - start for start, end in pool_windows(length, 1024, 1024)})
    print(f"{length} -> 1024: widths {widths}, first windows {pool_windows(length, 1024, count)}")

# %% [markdown]
# A flattened layer2 patch stores channel `c` at entries `9c … 9c+8`, its 3×3 window row by row.
# With windows 5 wide that overlap by one, output `2c` averages entries 0–4 of channel `c` and
# output `2c+1` entries 4–8: the centre is in both. The pooling matrix shows it. Pooling the
# identity matrix gives the matrix of any linear map, here for the first 5 channels:

# %%
pool = F.adaptive_avg_pool1d(torch.eye(45, 4608)[:, None, :], 1024)[:, 0, :10].T  # (10 outputs, 45 inputs)
fig, ax = plt.subplots(figsize=(8.4, 2.8))
shown = ax.imshow(pool, cmap="Greys", aspect="auto")
fig.colorbar(shown, ax=ax, pad=0.01).set_label("weight of input i\nin output j", fontsize=9)
for boundary in range(9, 45, 9):
    ax.axvline(boundary - 0.5, color="tab:red", lw=1)
ax.set_xlabel("input i: flattened layer2 patch entries 0…44\n(red lines: channel boundaries)")
ax.set_ylabel("output j")
ax.set_title("the 4608 → 1024 mean mapper, first 10 outputs", fontsize=9)
fig.tight_layout()

# %% [markdown]
# ## The aggregator, and the kernel it leaves
#
# The aggregator pools the 2048 stacked values to 1024 with windows of 2 that do not overlap.
# The first half comes from layer2 and the second from layer3, so no window straddles the layers.
# Pushing each entry of channel 0 through both pools on its own reads off the composed map:

# %%
# NBVAL_CHECK_OUTPUT
one_hots = torch.zeros(9, 512, 3, 3)
one_hots[:, 0] = torch.eye(9).reshape(9, 3, 3)  # entry e of channel 0 set to 1, everything else 0
through = aggregate(torch.stack([mean_map(one_hots), mean_map(torch.zeros(9, 1024, 3, 3))], dim=1))
print("weight of each channel-0 entry on output 0:\n", through[:, 0].reshape(3, 3).numpy().round(4))
print("largest weight on any other output:", through[:, 1:].abs().max().item())

# %% [markdown]
# So output `c < 512` is channel `c` of layer2 under a 3×3 kernel with **0.2 at the centre and 0.1
# around it**. Layer3's 9216 = 9·1024 entries give windows of exactly 9, so its mean mapper
# averages each channel's window, and the aggregator then averages channels `2m` and `2m+1`.
# Checked on the real 1568 patches:

# %%
# NBVAL_CHECK_OUTPUT
kernel = torch.full((3, 3), 0.1)
kernel[1, 1] = 0.2
closed_form_2 = (flat2 * kernel).sum(dim=(2, 3))  # (1568, 512)
closed_form_3 = flat3.mean(dim=(2, 3)).reshape(-1, 512, 2).mean(dim=2)  # pairs of channels: (1568, 512)
matches_2 = torch.allclose(features[:, :512], closed_form_2, atol=1e-5)
matches_3 = torch.allclose(features[:, 512:], closed_form_3, atol=1e-5)
print("dims 0-511 = layer2 channels under the kernel:", matches_2)
print("dims 512-1023 = means of layer3 channel pairs: ", matches_3)
assert matches_2 and matches_3

# %% [markdown]
# The reference code writes the pools generically. The closed form says what its 1024 numbers
# are: a blurred layer2 feature next to a channel-halved layer3 feature.
#
# ## Where the bilinear resize samples
#
# With `align_corners=False` pixels are little squares whose *centres* line up. Output `j` of 28
# samples the 14-pixel input at `(j + 0.5)·14/28 − 0.5`, in input pixel indices. Positions
# outside `[0, 13]` are clamped to the edge pixel.

# %%
# NBVAL_CHECK_OUTPUT
positions = (torch.arange(28) + 0.5) * 14 / 28 - 0.5
print("first sampling positions:", [round(x, 2) for x in positions[:6].tolist()], "...")
print("last ones:               ", "...", [round(x, 2) for x in positions[-3:].tolist()])
small = patches3[1, :, 0, 1, 1].reshape(14, 14)  # image 1, channel 0, centre of the 3x3 patch
large = aligned3[1, :, 0, 1, 1].reshape(28, 28)
near, far = 1 - (positions[5] - positions[5].floor()), positions[5] - positions[5].floor()
print(f"output 5 sits at {positions[5].item():.2f}: weight {near.item():.2f} on input 2, {far.item():.2f} on input 3")
assert torch.allclose(large[5, 9], 0.75 * 0.75 * small[2, 4] + 0.75 * 0.25 * small[2, 5]
                      + 0.25 * 0.75 * small[3, 4] + 0.25 * 0.25 * small[3, 5])  # j=5 -> 2.25, j=9 -> 4.25

# %% [markdown]
# Every output sits a quarter pixel beside an input centre. Left: one patch entry on its 14×14
# grid, middle: resized to 28×28, right: one row of it resized alone, with the sampling positions.

# %%
row = 7
fig = plt.figure(figsize=(8.4, 6.4), layout="constrained")  # the two maps above, the row below
top, bottom = fig.subfigures(2, 1, height_ratios=[1, 1])
axes = [*top.subplots(1, 2), bottom.subplots()]
vmin, vmax = small.min().item(), small.max().item()
for ax, grid_map, title in ((axes[0], small, "layer3 entry, 14×14"),
                            (axes[1], large, "bilinear to 28×28 (align_corners=False)")):
    shown = ax.imshow(grid_map, vmin=vmin, vmax=vmax, cmap="viridis")
    ax.set_title(title, fontsize=10)
    ax.set_xticks([]), ax.set_yticks([])
top.colorbar(shown, ax=axes[:2], fraction=0.03, pad=0.02).set_label("feature value\n(random weights)", fontsize=9)
axes[0].axhline(row, color="white", lw=0.8)
axes[1].axhline(2 * row + 0.5, color="white", lw=0.8)
signal = small[row]
resized = F.interpolate(signal[None, None], size=28, mode="linear", align_corners=False)[0, 0]
axes[2].plot(torch.arange(14), signal, "o-", color="tab:blue", label="14 input samples (at 0, 1, …, 13)")
axes[2].plot(positions, resized, "x", color="tab:orange", label="28 outputs (at j/2 − 0.25)")
axes[2].axvspan(-0.5, 0, color="grey", alpha=0.2)
axes[2].axvspan(13, 13.5, color="grey", alpha=0.2, label="clamped to the edge sample")
axes[2].set_xlabel("position in input pixels")
axes[2].set_ylabel("feature value")
axes[2].set_title(f"row {row} of the 14×14 map, resized alone", fontsize=10)
axes[2].legend(fontsize=9);

# %% [markdown]
# ## The same pools on a narrow backbone
#
# `mobilenet_v2`'s layers have 32 and 96 channels: patches of 288 and 864 entries, fewer than
# 1024. The mean mapper then pools *up*, with windows of 1 or 2: most outputs copy one entry.

# %%
# NBVAL_CHECK_OUTPUT
for entries in (32 * 9, 96 * 9):
    widths = [end - start for start, end in pool_windows(entries, 1024, 1024)]
    print(f"{entries:4d} -> 1024: {widths.count(1)} outputs copy one entry, {widths.count(2)} average two;"
          f" first windows {pool_windows(entries, 1024, 5)}")

# %% [markdown]
# That is why the core notebook's table finds only 288 independent dimensions in the shallow
# layer's half, and why `mobilenet_v2` defaults to `pooled_concat`.
#
# ## Exercises: predict, then run
#
# 1. With `patch_size=5`, what are the shapes after `unfold` and `patchify` for layer2, after
#    `patchify` for layer3, and of the embedding? How wide are the mean mapper's windows?
# 2. With **three** layers, `layer1` + `layer2` + `layer3` (`layer1`: stride 4, 256 channels):
#    which grid do the patches end up on, what are the stacked and aggregated shapes, and how
#    many rows does each image add to the memory bank?

# %% [markdown] tags=["solution"]
# 1. 512·25 = 12800 values per column, and padding 2 keeps the 28×28 grid: `(2, 12800, 784)`,
#    `(2, 784, 512, 5, 5)`, `(2, 196, 1024, 5, 5)`, then `(1568, 1024)`. 12800/1024 = 12.5, so
#    the windows are 13 wide and overlap by one.
# 2. The first layer's grid, 56×56: 2·3136 = 6272 patches, stacked `(6272, 3, 1024)`, aggregated
#    `(6272, 1024)`. 3136 rows per image instead of 784, four times as many.

# %%
# NBVAL_CHECK_OUTPUT
layer2 = feature_maps["layer2"]
print("p=5 unfold:   ", tuple(F.unfold(layer2, kernel_size=5, padding=2).shape))
print("p=5 layer2:   ", tuple(patchify(layer2, patch_size=5)[0].shape))
print("p=5 layer3:   ", tuple(patchify(feature_maps["layer3"], patch_size=5)[0].shape))
print("p=5 embedding:", tuple(embed(feature_maps, patch_size=5)[0].shape))
print("p=5 windows 12800 -> 1024:", sorted({end - start for start, end in pool_windows(12800, 1024, 1024)}), "wide")

# %%
# NBVAL_CHECK_OUTPUT
patched = [patchify(fmap) for fmap in all_maps.values()]  # [(patches, grid), ...] for layer1, 2, 3
three_grid = patched[0][1]
per_layer = [mean_map(align_patches(p, g, three_grid).flatten(0, 1)) for p, g in patched]
three_stacked = torch.stack(per_layer, dim=1)
three_features = aggregate(three_stacked)
print("layer1:", tuple(all_maps["layer1"].shape), "-> grid", three_grid)
print("3 layers: stacked", tuple(three_stacked.shape), "-> aggregated", tuple(three_features.shape))
print("rows per image:", three_grid[0] * three_grid[1], "instead of", grid2[0] * grid2[1])

# %% [markdown]
# ## Summary
#
# * `adaptive_avg_pool1d` windows run from `floor(j·L/out)` to `ceil((j+1)·L/out)`; they overlap
#   when `out` does not divide `L`, and copy entries when `out > L`.
# * For `wide_resnet50_2` at 1024/1024 the mean mapper + aggregator is a 0.2/0.1 3×3 kernel per
#   layer2 channel next to means of layer3 channel pairs; the layers are never mixed.
# * Bilinear resizing with `align_corners=False` samples at `j/2 − 0.25`, clamped at the edges.
#
# Back to [02 · Locally aware patches](../02_locally_aware_patches.ipynb), or on to
# [03 · Coreset](../03_coreset.ipynb).
