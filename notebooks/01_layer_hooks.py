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
# **9 minutes** · previous: [00 · Setup](00_setup.ipynb) ·
# next: [02 · Locally aware patches](02_locally_aware_patches.ipynb)
#
# **Learning goals.** After this notebook you can
#
# 1. read any layer's output with a PyTorch **forward hook**, and remove the hook again;
# 2. check that `pcnotes.stages.s1_features.FeatureExtractor` stops the forward pass once it has what it needs;
# 3. predict the shapes PatchCore reads from `wide_resnet50_2` and from the default `mobilenet_v2`;
# 4. say why PatchCore takes **middle** layers, not the first or the last.
#
# Stage 1 of the pipeline: `images (B, 3, 224, 224) → hooks → {layer: (B, C, H, W)}`.

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
import inspect

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F

from pcnotes import (
    ensure_default_dataset,
    image_transform,
    list_categories,
    list_defects,
    load_images,
    load_mask,
    mask_transform,
    unnormalize,
)
from pcnotes.stages import DEFAULT_LAYERS, FeatureExtractor, NearestNeighbours, load_backbone

torch.manual_seed(0)
plt.rcParams["figure.dpi"] = 80

# %% [markdown]
# ## Two images
#
# One normal and one defective image, preprocessed as in the pipeline: resize to 256, centre
# crop 224, ImageNet normalisation.

# %%
# NBVAL_CHECK_OUTPUT
root = ensure_default_dataset(seed=0)  # $PCNOTES_DATA when it is set
categories = list_categories(root)
CATEGORY = categories[min(1, len(categories) - 1)]  # the second one: tiles in the embedded set
DEFECT = list_defects(root, CATEGORY)[-1]  # the last one: stain in the embedded tiles
paths = [sorted((root / CATEGORY / "train" / "good").glob("*.png"))[0],
         sorted((root / CATEGORY / "test" / DEFECT).glob("*.png"))[0]]
images = load_images(paths, image_transform(resize=256, crop=224))
assert images.shape == (2, 3, 224, 224)
print("images:", tuple(images.shape), images.dtype)

# %% [markdown]
# ## The paper's backbone, with random weights
#
# The paper reads `layer2` and `layer3` of an ImageNet `wide_resnet50_2`. Those weights need
# torchvision's ImageNet download, and `pcnotes` ships only MobileNetV2 weights, so the shapes
# here come from **random weights**, seeded. Shapes do not depend on the weights.

# %%
# NBVAL_CHECK_OUTPUT
wrn, wrn_weights = load_backbone("wide_resnet50_2", weights="random", seed=0)
print("wide_resnet50_2 weights:", wrn_weights)

# %% [markdown]
# ### A forward hook by hand
#
# A forward hook is a function PyTorch calls right after a module's `forward`, with the module,
# its inputs and its **output**. `register_forward_hook` returns a handle; `handle.remove()`
# takes the hook off. A hook stops nothing: `layer4`, the pooling and the head still run.

# %%
# NBVAL_CHECK_OUTPUT
captured = {}


def save_output(module, inputs, output):
    captured["layer2"] = output


handle = wrn.layer2.register_forward_hook(save_output)
with torch.no_grad():
    logits = wrn(images)
handle.remove()

print("layer2 output:", tuple(captured["layer2"].shape))
print("and the network still ran to the end: logits", tuple(logits.shape))
print("hooks left on layer2:", len(wrn.layer2._forward_hooks))
assert captured["layer2"].shape == (2, 512, 28, 28)

# %% [markdown]
# ### The same with `FeatureExtractor`
#
# `FeatureExtractor(backbone, layers)` hooks every requested layer. The hook of the **last** one
# raises a private exception that ends the forward pass there, and `finally` removes every hook:

# %%
print(inspect.getsource(FeatureExtractor.forward))

# %%
# NBVAL_CHECK_OUTPUT
extractor = FeatureExtractor(wrn, ("layer2", "layer3"))

layer4_ran = []  # a spy: appends if layer4 ever runs
spy = wrn.layer4.register_forward_hook(lambda module, inputs, output: layer4_ran.append(True))
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
# How much work stopping early saves, and the shape of every `mobilenet_v2` block:
# [deeper/01_layer_choice](deeper/01_layer_choice.ipynb).
#
# Reading the shapes `(B, C, H, W)`: `layer2` has stride 8 (224 / 8 = 28), `layer3` stride 16
# (224 / 16 = 14). Each grid position describes one region of the image, and PatchCore calls it
# a **patch**.
#
# ## Predict a shape
#
# `resnet18` has the same strides, but its stages have 64, 128, 256 and 512 channels (basic
# blocks, without the bottleneck's 4× expansion). **Before you run the next cell**, write down the
# shapes of its `layer2` and `layer3` for our two images.

# %% [markdown] tags=["solution"]
# *Answer.* `layer2 → (2, 128, 28, 28)` and `layer3 → (2, 256, 14, 14)`: the grids follow the
# strides, the channels the stage.

# %%
# NBVAL_CHECK_OUTPUT
resnet18, _ = load_backbone("resnet18", weights="random", seed=0)
ran = []
spy = resnet18.layer4.register_forward_hook(lambda *args: ran.append(True))
resnet_features = FeatureExtractor(resnet18, DEFAULT_LAYERS["resnet18"])(images)
spy.remove()
for name, fmap in resnet_features.items():
    print(f"{name}: {tuple(fmap.shape)}")
print("layer4 ran:", bool(ran))
assert resnet_features["layer2"].shape == (2, 128, 28, 28) and resnet_features["layer3"].shape == (2, 256, 14, 14)

# %% [markdown]
# ## The default backbone: `mobilenet_v2` with its shipped ImageNet weights
#
# Its torchvision layout is one `Sequential`, `features`, of 19 blocks. `features.6` and
# `features.13` are the last blocks of its stride-8 and stride-16 stages, in the roles of
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
# ## Why middle layers, not the first or the last
#
# The paper (section 3.1): **early layers** have a fine grid but generic edges; the **last
# layers** are biased to ImageNet's classes, and 7×7 is too coarse to say *where* a small defect
# is. **Middle layers** keep a useful grid and combine edges into mid-level patterns.
#
# The defective image through an early block, the two defaults and a late one. Top: each
# position's feature norm. Bottom: its distance to the nearest of the same block's features of
# 8 normal images, a one-layer PatchCore. Red: the ground-truth mask.

# %%
blocks = ("features.2", "features.6", "features.13", "features.17")
train_paths = sorted((root / CATEGORY / "train" / "good").glob("*.png"))[:8]
train_images = load_images(train_paths, image_transform(resize=256, crop=224))
block_extractor = FeatureExtractor(mobilenet, blocks)
train_maps = block_extractor(train_images)  # {block: (8, C, h, w)}
test_maps = block_extractor(images[1:])  # the defective image: {block: (1, C, h, w)}

mask_path = root / CATEGORY / "ground_truth" / DEFECT / f"{paths[1].stem}_mask.png"
mask = mask_transform(resize=256, crop=224)(load_mask(mask_path))[0]  # (224, 224), same crop as the image


def one_nn_distance(train_fmap: torch.Tensor, test_fmap: torch.Tensor) -> np.ndarray:
    """Per-position distance to the nearest normal feature: (n, C, h, w), (1, C, h, w) -> (h, w)."""
    channels, height, width = test_fmap.shape[1:]
    bank = train_fmap.permute(0, 2, 3, 1).reshape(-1, channels).numpy()
    queries = test_fmap.permute(0, 2, 3, 1).reshape(-1, channels).numpy()
    distances, _ = NearestNeighbours(bank).search(queries, k=1)
    return distances[:, 0].reshape(height, width)


def show_blocks(pair: tuple[str, str]) -> None:
    """One figure: the image and mask, then per block its feature norm (top) and 1-NN distance (bottom)."""
    fig, axes = plt.subplots(2, 3, figsize=(8.4, 5.4))
    axes[0, 0].imshow(unnormalize(images[1]))
    axes[0, 0].contour(mask.numpy(), levels=[0.5], colors="red", linewidths=1)
    axes[0, 0].set_title("image (224×224)")
    axes[1, 0].imshow(mask.numpy(), cmap="gray")
    axes[1, 0].set_title("ground-truth mask")
    for column, block in enumerate(pair, start=1):
        fmap = test_maps[block]
        size = fmap.shape[-1]
        small_mask = F.interpolate(mask[None, None], size=(size, size), mode="area")[0, 0].numpy()
        panels = [fmap[0].norm(dim=0).numpy(), one_nn_distance(train_maps[block], fmap)]
        titles = [f"{block}: {fmap.shape[1]} ch, {size}×{size}\nfeature norm (L2)",
                  "1-NN distance to normal\n(the anomaly score)"]
        for row, (panel, title) in enumerate(zip(panels, titles)):
            shown = axes[row, column].imshow(panel, cmap="viridis")
            axes[row, column].contour(small_mask, levels=[0.25], colors="red", linewidths=1)
            axes[row, column].set_title(title)
            fig.colorbar(shown, ax=axes[row, column], fraction=0.046, pad=0.03)
    for ax in axes.flat:
        ax.axis("off")
    fig.tight_layout()


show_blocks(blocks[:2])  # early against the first default
show_blocks(blocks[2:])  # the second default against late

# %% [markdown]
# What to look for:
#
# * `features.2` answers to **edges**: the stain's outline competes with normal grout.
# * `features.6` and `features.13`: normal grout fades; the strongest responses sit on the stain.
# * `features.17`: a broad blob whose peak need not lie on the defect.
#
# One image is a hint, not evidence; other layer pairs through the whole pipeline:
# [deeper/01_layer_choice](deeper/01_layer_choice.ipynb).
#
# ## Summary
#
# * A forward hook reads a layer's output; `FeatureExtractor` stops after the last layer it needs.
# * `wide_resnet50_2`: `(B, 512, 28, 28)` and `(B, 1024, 14, 14)`; `mobilenet_v2`:
#   `(B, 32, 28, 28)` and `(B, 96, 14, 14)`.
# * Middle layers: a grid fine enough to localise, features past mere edges.
#
# Next: [02 · Locally aware patches](02_locally_aware_patches.ipynb).
