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
# # 01 · Layer hooks: reading the middle of a frozen network
#
# **Learning goals.** After this notebook you can
#
# 1. read any layer's output with a PyTorch **forward hook**, and remove the hook again;
# 2. explain how `pcnotes.backbone.FeatureExtractor` stops the forward pass once it has what it
#    needs, and check that it did;
# 3. predict the shapes PatchCore gets from `wide_resnet50_2` (`layer2`, `layer3`) and from the
#    default `mobilenet_v2` (`features.6`, `features.13`) for a 224×224 image;
# 4. argue, with pictures and with a measurement, why PatchCore takes **middle** layers and not the
#    first or the last.
#
# This is stage 1 of the data flow from notebook 00:
# `images (B, 3, 224, 224) → hooks → {layer: (B, C, H, W)}`.

# %%
# %matplotlib inline
import inspect
from contextlib import contextmanager

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F

from pcnotes.backbone import DEFAULT_LAYERS, FeatureExtractor, load_backbone
from pcnotes.data import (
    image_transform,
    list_categories,
    list_defects,
    load_images,
    load_mask,
    mask_transform,
    unnormalize,
)
from pcnotes.scoring import NearestNeighbours
from pcnotes.synth import ensure_default_dataset

torch.manual_seed(0)
plt.rcParams["figure.dpi"] = 80

# %% [markdown]
# ## Two images
#
# We take one normal and one defective image from the embedded data set (notebook 00). They get the
# same preprocessing as in the pipeline: resize to 256, centre crop 224, ImageNet normalisation.
# In this notebook only the shapes matter, but real images make the feature-map pictures further
# down meaningful.

# %%
# NBVAL_CHECK_OUTPUT
root = ensure_default_dataset(seed=0)
categories = list_categories(root)  # from the folders, so this also runs on MVTec AD
CATEGORY = categories[min(1, len(categories) - 1)]  # the second one: tiles in the embedded set
DEFECT = list_defects(root, CATEGORY)[-1]  # the last one: stain in the embedded tiles
paths = [root / CATEGORY / "train" / "good" / "000.png", root / CATEGORY / "test" / DEFECT / "000.png"]
images = load_images(paths, image_transform(resize=256, crop=224))
assert images.shape == (2, 3, 224, 224)
print("images:", tuple(images.shape), images.dtype)

# %% [markdown]
# ## The paper's backbone, with random weights
#
# The paper reads `layer2` and `layer3` of an ImageNet-pretrained `wide_resnet50_2`. This machine
# cannot download those weights (notebook 00), so we build the network with **random weights**,
# seeded, and say so. The features are meaningless, but the **shapes** are the same as with the
# real weights, and shapes are what this part of the notebook is about.

# %%
wrn, wrn_weights = load_backbone("wide_resnet50_2", weights="random", seed=0)
print("wide_resnet50_2 weights:", wrn_weights)

# %% [markdown]
# ### A forward hook by hand
#
# A forward hook is a function that PyTorch calls right after a module's `forward`, with the
# module, its inputs and its **output**. To keep a layer's output we register a hook that stores
# it. `register_forward_hook` returns a handle, and we must call `handle.remove()` afterwards,
# or the hook stays on the model for every later forward pass.
#
# Done this naively, the whole network still runs, including `layer4`, the pooling and the
# 1000-class head, and PatchCore throws all of that away.

# %% [markdown]
# To see how much work a forward pass does, we count the multiply-adds of every convolution, and
# we do it with hooks as well: one hook on each `Conv2d` adds `output elements × (input channels /
# groups) × kernel area`. Counting is deterministic, unlike a stopwatch on a shared machine.

# %%
@contextmanager
def count_conv_macs(model: torch.nn.Module):
    """Count the multiply-adds of every Conv2d that runs inside the `with` block."""
    total = [0]

    def count(conv, inputs, output):
        total[0] += output.numel() * (conv.in_channels // conv.groups) * conv.kernel_size[0] * conv.kernel_size[1]

    handles = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    try:
        yield total
    finally:
        for handle in handles:
            handle.remove()


# %%
# NBVAL_CHECK_OUTPUT
captured = {}


def save_output(module, inputs, output):
    captured["layer2"] = output


handle = wrn.layer2.register_forward_hook(save_output)
with torch.no_grad(), count_conv_macs(wrn) as full_macs:
    logits = wrn(images)
handle.remove()

print("layer2 output:", tuple(captured["layer2"].shape))
print("and the network still ran to the end: logits", tuple(logits.shape))
print("hooks left on layer2:", len(wrn.layer2._forward_hooks))
assert captured["layer2"].shape == (2, 512, 28, 28)

# %% [markdown]
# ### The same with `FeatureExtractor`
#
# `FeatureExtractor(backbone, layers)` registers one hook per requested layer. The hook of the
# **last** requested layer raises a private exception, which ends the forward pass right there.
# The `finally` block removes every hook, even if something fails. Here is the method:

# %%
print(inspect.getsource(FeatureExtractor.forward))

# %%
# NBVAL_CHECK_OUTPUT
extractor = FeatureExtractor(wrn, ("layer2", "layer3"))

layer4_ran = []  # a spy: appends if layer4 ever runs
spy = wrn.layer4.register_forward_hook(lambda module, inputs, output: layer4_ran.append(True))
with count_conv_macs(wrn) as hooked_macs:
    features = extractor(images)
spy.remove()

for name, fmap in features.items():
    print(f"{name}: {tuple(fmap.shape)}")
print("layer4 ran:", bool(layer4_ran))
print("hooks left on layer2 and layer3:", len(wrn.layer2._forward_hooks) + len(wrn.layer3._forward_hooks))
assert features["layer2"].shape == (2, 512, 28, 28)
assert features["layer3"].shape == (2, 1024, 14, 14)
assert torch.equal(features["layer2"], captured["layer2"])  # same numbers as the hand-written hook

# %% [markdown]
# Stopping early skips the whole `layer4` stage (3 bottleneck blocks with 2048 output channels)
# and the head. The convolution work, for our two images:

# %%
# NBVAL_CHECK_OUTPUT
print(f"full forward:         {full_macs[0] / 1e9:5.1f} G multiply-adds in convolutions")
print(f"stopped after layer3: {hooked_macs[0] / 1e9:5.1f} G  ({100 * (1 - hooked_macs[0] / full_macs[0]):.0f} % saved)")

# %% [markdown]
# Reading the shapes: `(B, C, H, W)`. `layer2` has stride 8 (224 / 8 = 28) and `layer3` stride 16
# (224 / 16 = 14). Each position of these grids is the feature of one image region, and its
# *receptive field* is much larger than its 8 or 16 pixel stride. PatchCore calls such a
# position a **patch**.

# %% [markdown]
# ## The default backbone: `mobilenet_v2` with its shipped ImageNet weights
#
# `mobilenet_v2` is the backbone every later notebook uses. Its weights are real ImageNet weights
# and ship with the project. Its torchvision layout is one `Sequential` called `features` with
# 19 blocks (`features.0` … `features.18`). We hook the blocks that play the roles of
# `layer2` and `layer3`:

# %%
# NBVAL_CHECK_OUTPUT
mobilenet, mobilenet_weights = load_backbone("mobilenet_v2")  # ImageNet, from data/, sha256-checked
print("default layers:", DEFAULT_LAYERS["mobilenet_v2"])
mobile_features = FeatureExtractor(mobilenet, DEFAULT_LAYERS["mobilenet_v2"])(images)
for name, fmap in mobile_features.items():
    print(f"{name}: {tuple(fmap.shape)}")
assert mobile_features["features.6"].shape == (2, 32, 28, 28)
assert mobile_features["features.13"].shape == (2, 96, 14, 14)

# %% [markdown]
# Why those two? Hook **every** block at once and look at the output shape and the stride
# (224 / output width). MobileNetV2 halves the resolution at the first block of a stage, and the
# channel count changes in between. The **last** block of the stride-8 stage is `features.6`.
# The stride-16 stage runs from `features.7` to `features.13`, with a channel change at
# `features.11` (64 → 96). Its last block, `features.13`, is the deepest 14×14 map.

# %%
# NBVAL_CHECK_OUTPUT
all_blocks = [f"features.{i}" for i in range(len(mobilenet.features))]
every_map = FeatureExtractor(mobilenet, all_blocks)(images)
modules = dict(mobilenet.named_modules())
print(f"{'block':12s} {'type':22s} {'output':20s} stride")
for name, fmap in every_map.items():
    stride = 224 // fmap.shape[-1]
    note = "  <- default (stride 8)" if name == "features.6" else ""
    note = "  <- default (stride 16)" if name == "features.13" else note
    print(f"{name:12s} {type(modules[name]).__name__:22s} {str(tuple(fmap.shape)):20s} {stride:4d}{note}")

# %% [markdown]
# ## Why middle layers, not the first or the last
#
# The paper's argument (section 3.1) has three parts:
#
# * **Early layers** (stride 2–4) have high resolution, but they encode generic low-level
#   things: edges, colours, fine texture. They barely tell "a different kind of structure" from
#   "the same structure, slightly shifted".
# * **The last layers** (stride 32) are trained to separate ImageNet's 1000 classes. Their
#   features are biased towards those classes, which have nothing to do with scratches on wood,
#   and a 7×7 grid is too coarse to say *where* a small defect is.
# * **Middle layers** (stride 8–16) keep a useful grid (28×28, 14×14) and already combine edges
#   into mid-level patterns. PatchCore uses two of them: the stride-8 one for detail and the
#   stride-16 one for a bit more context.
#
# Let us look at the defective image through four blocks: an early one (`features.2`, 56×56),
# the two defaults (`features.6`, `features.13`) and a late one (`features.17`, 7×7).
#
# * **Top row:** the length (L2 norm) of each position's feature vector, i.e. how strongly the
#   block responds there.
# * **Bottom row:** a one-layer PatchCore without its later stages. Each position's distance to
#   its nearest neighbour among the same block's features of 8 *normal* images, with no 3×3
#   patches, no pooling and no coreset.
#
# The red contour is the ground-truth mask, scaled to each grid.

# %%
blocks = ("features.2", "features.6", "features.13", "features.17")
train_paths = sorted((root / CATEGORY / "train" / "good").glob("*.png"))[:8]
train_images = load_images(train_paths, image_transform(resize=256, crop=224))
block_extractor = FeatureExtractor(mobilenet, blocks)
train_maps = block_extractor(train_images)  # {block: (8, C, h, w)}
test_maps = block_extractor(images[1:])  # the defective image: {block: (1, C, h, w)}

mask_path = root / CATEGORY / "ground_truth" / DEFECT / "000_mask.png"
mask = mask_transform(resize=256, crop=224)(load_mask(mask_path))[0]  # (224, 224), same crop as the image


def one_nn_distance(train_fmap: torch.Tensor, test_fmap: torch.Tensor) -> np.ndarray:
    """Per-position distance to the nearest normal feature: (n, C, h, w), (1, C, h, w) -> (h, w)."""
    channels, height, width = test_fmap.shape[1:]
    bank = train_fmap.permute(0, 2, 3, 1).reshape(-1, channels).numpy()
    queries = test_fmap.permute(0, 2, 3, 1).reshape(-1, channels).numpy()
    distances, _ = NearestNeighbours(bank).search(queries, k=1)
    return distances[:, 0].reshape(height, width)


fig, axes = plt.subplots(2, len(blocks) + 1, figsize=(12, 5))
axes[0, 0].imshow(unnormalize(images[1]))
axes[0, 0].contour(mask.numpy(), levels=[0.5], colors="red", linewidths=1)
axes[0, 0].set_title("image (224×224)", fontsize=9)
axes[1, 0].imshow(mask.numpy(), cmap="gray")
axes[1, 0].set_title("ground-truth mask", fontsize=9)
for column, block in enumerate(blocks, start=1):
    fmap = test_maps[block]
    size = fmap.shape[-1]
    small_mask = F.interpolate(mask[None, None], size=(size, size), mode="area")[0, 0].numpy()
    panels = [fmap[0].norm(dim=0).numpy(), one_nn_distance(train_maps[block], fmap)]
    titles = [f"{block}: {fmap.shape[1]} ch, {size}×{size}\nfeature norm", "1-NN distance to normal"]
    for row, (panel, title) in enumerate(zip(panels, titles)):
        axes[row, column].imshow(panel, cmap="viridis")
        axes[row, column].contour(small_mask, levels=[0.25], colors="red", linewidths=1)
        axes[row, column].set_title(title, fontsize=9)
for ax in axes.flat:
    ax.axis("off")
fig.tight_layout()

# %% [markdown]
# What to look for:
#
# * `features.2` (56×56) is sharp, but it answers mostly to **edges**: its norm draws the grout
#   lines, and in the 1-NN row the stain's outline competes with grout lines that are perfectly
#   normal. At this depth, "unusual" means "slightly different edges here".
# * `features.6` (28×28) and `features.13` (14×14): the normal grout pattern is found in the
#   normal images and fades, and the strongest 1-NN responses sit on the stain. A 14×14 cell
#   covers 16×16 pixels, still fine enough to outline a defect.
# * `features.17` (7×7): one cell covers 32×32 pixels, and each position "sees" most of the
#   image. The response is a broad blob whose peak need not lie on the defect. Its 320 channels
#   were trained to recognise ImageNet objects, not stains.
#
# The synthetic defects are easy, so every block reacts to them somewhat. The measurement below
# takes the whole pipeline into account.
#
# ## The measurement behind the default layers
#
# Pictures of one image are a hint, not evidence. `benchmarks/mobilenet_layers.py` runs the
# whole PatchCore pipeline for several candidate layer sets, changing nothing else
# (`pcnotes.evaluation.evaluate_category`: approximate greedy coreset of 5 % of the bank, k = 1,
# σ = 4 maps). It does this on every category of the embedded data set and reports the mean over
# the three categories. We do not rerun it here, because it takes about half an hour. The table
# was measured with `python benchmarks/mobilenet_layers.py` on 2026-11-24, on 2 CPU cores shared
# with other jobs, on the data set these notebooks use (`pcnotes.synth` v1, seed 0, manifest
# sha256 `644aa4f83413…`). The times depend heavily on that load, so compare
# them only within the table. "Memory bank" is the number of rows kept per category, and
# "fit + predict" is summed over the categories.
#
# | layers | strides | image AUROC | pixel AUROC | AUPRO | memory bank | fit + predict |
# | --- | --- | ---: | ---: | ---: | ---: | ---: |
# | `features.6` + `features.13` (default) | 8 / 16 | 0.994 | 0.993 | 0.976 | 1,881 | 288 s |
# | `features.6` + `features.10` | 8 / 16 | 0.997 | 0.993 | 0.976 | 1,881 | 222 s |
# | `features.10` + `features.13` | 16 / 16 | 0.999 | 0.988 | 0.957 | 470 | 140 s |
# | `features.13` + `features.16` | 16 / 32 | 1.000 | 0.984 | 0.945 | 470 | 74 s |
# | `features.6` | 8 | 0.992 | 0.993 | 0.977 | 1,881 | 172 s |
# | `features.3` + `features.6` | 4 / 8 | 0.985 | 0.994 | 0.982 | 7,526 | 640 s |
#
# How to read it, and what it does **not** show:
#
# * **Resolution drives localisation.** Pixel AUROC and AUPRO drop steadily as the first layer,
#   which sets the patch grid, gets coarser. AUPRO goes from 0.982 (56×56 grid) to 0.976 (28×28)
#   to 0.957 and 0.945 (14×14). This is the "last layers lose spatial resolution" half of the
#   argument, measured.
# * **Depth helps the image score, a little.** The deeper sets reach image AUROC 0.999–1.000, and
#   the stride-4 set is the worst at 0.985. Each category has 12 good and 24 defective test
#   images, so one wrongly ordered (good, defective) pair costs 1/288 ≈ 0.0035 of a category's
#   AUROC. Most image AUROC differences in the table are one or two such pairs.
# * **Cost.** The stride-4 set keeps 4× the patches: a 4× larger memory bank and about 2× the
#   time here (in general up to 16× for the coreset and the search).
# * **The default is a compromise, not a clear winner on this data.** `features.6` +
#   `features.13` ties `features.6` + `features.10` and `features.6` alone within those one or
#   two pairs. The synthetic defects are too easy to separate them. We keep the last block of the
#   stride-8 stage plus the last block of the stride-16 stage because they are the same choice as
#   the paper's `layer2` + `layer3`, the pair its ablation over hierarchy levels on MVTec AD
#   favoured. On our data it does as well as the other stride-8 choices at a quarter of the
#   stride-4 set's memory. On your own data, rerun the benchmark with `--root`.

# %% [markdown]
# ## Summary
#
# * A forward hook is `module.register_forward_hook(fn)`. `fn(module, inputs, output)` sees the
#   output, and the handle's `remove()` takes the hook off again.
# * `FeatureExtractor` hooks the requested layers, ends the forward pass at the last of them
#   (`layer4` never runs) and always removes its hooks.
# * `wide_resnet50_2`: `layer2 → (B, 512, 28, 28)`, `layer3 → (B, 1024, 14, 14)`.
#   `mobilenet_v2`: `features.6 → (B, 32, 28, 28)`, `features.13 → (B, 96, 14, 14)`, the last
#   blocks of its stride-8 and stride-16 stages.
# * Middle layers trade resolution against abstraction: early blocks are sharp but generic, late
#   blocks are ImageNet-specific and too coarse.
#
# ## Exercise
#
# Build `resnet18` with `weights="random"` and hook `layer2` and `layer3`. **Before running it,
# write down the two shapes you expect** for our two 224×224 images. ResNet-18 uses basic blocks
# without the 4× channel expansion of the bottleneck, so its stages have 64, 128, 256 and 512
# channels. Check your prediction, and check that `layer4` did not run.

# %% [markdown]
# ### Solution

# %%
# NBVAL_CHECK_OUTPUT
resnet18, _ = load_backbone("resnet18", weights="random", seed=0)
expected = {"layer2": (2, 128, 28, 28), "layer3": (2, 256, 14, 14)}  # strides 8 and 16
ran = []
spy = resnet18.layer4.register_forward_hook(lambda *args: ran.append(True))
resnet_features = FeatureExtractor(resnet18, DEFAULT_LAYERS["resnet18"])(images)
spy.remove()
for name, fmap in resnet_features.items():
    print(f"{name}: {tuple(fmap.shape)}  as predicted: {tuple(fmap.shape) == expected[name]}")
print("layer4 ran:", bool(ran))
