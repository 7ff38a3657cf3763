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
# # 01 deeper · Which layers: the work saved, every block's shape, and the measurement
#
# Continues [01 · Layer hooks](../01_layer_hooks.ipynb), after *Why middle layers*. Reading for
# after class.
#
# **Learning goals.** After this notebook you can
#
# 1. count a network's multiply-adds with hooks, and say how much stopping after `layer3` saves;
# 2. find the last block of each stride stage of `mobilenet_v2` from its shapes;
# 3. run PatchCore with other layer sets, and read what grid resolution and depth change;
# 4. regenerate and read the full layer benchmark, `benchmarks/mobilenet_layers.py`.

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
import json
from contextlib import contextmanager

import numpy as np
import torch

from pcnotes import (
    PatchCore,
    PatchCoreConfig,
    display_path,
    ensure_default_dataset,
    list_categories,
    load_split,
    read_manifest,
    results_dir,
    stack,
)
from pcnotes.stages import DEFAULT_LAYERS, FeatureExtractor, load_backbone

_ = torch.manual_seed(0)

# %% [markdown]
# ## The work saved by stopping early
#
# We count the multiply-adds of every convolution with hooks as well: one hook on each `Conv2d`
# adds `output elements × (input channels / groups) × kernel area`. Counting is deterministic,
# unlike a stopwatch. The network is the paper's `wide_resnet50_2` with random weights, as in
# the core notebook (the count does not depend on the weights), on two 224×224 inputs.

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
wrn, _ = load_backbone("wide_resnet50_2", weights="random", seed=0)
images = torch.randn(2, 3, 224, 224)  # only the shapes matter for the count
with torch.no_grad(), count_conv_macs(wrn) as full_macs:
    wrn(images)
with count_conv_macs(wrn) as hooked_macs:
    FeatureExtractor(wrn, ("layer2", "layer3"))(images)
saved = 1 - hooked_macs[0] / full_macs[0]
print(f"full forward:         {full_macs[0] / 1e9:5.1f} G multiply-adds in convolutions")
print(f"stopped after layer3: {hooked_macs[0] / 1e9:5.1f} G  ({saved:.0%} saved)")

# %% [markdown]
# The saving is the whole `layer4` stage (three bottleneck blocks with 2048 output channels) and
# the head. It is less than one might guess, because `layer4` runs on a 7×7 grid only.
#
# ## The shape of every `mobilenet_v2` block
#
# Hook **every** block at once and read the output shape and the stride (224 / output width).
# MobileNetV2 halves the resolution at the first block of a stage, and changes the channel count
# in between. The last block of each stride is where that stage's features are most developed.

# %%
# NBVAL_CHECK_OUTPUT
mobilenet, _ = load_backbone("mobilenet_v2")  # the shipped ImageNet weights
all_blocks = [f"features.{i}" for i in range(len(mobilenet.features))]
every_map = FeatureExtractor(mobilenet, all_blocks)(images)
modules = dict(mobilenet.named_modules())
defaults = DEFAULT_LAYERS["mobilenet_v2"]
print(f"{'block':12s} {'type':22s} {'output':20s} stride")
for name, fmap in every_map.items():
    stride = 224 // fmap.shape[-1]
    note = "  <- default" if name in defaults else ""
    print(f"{name:12s} {type(modules[name]).__name__:22s} {str(tuple(fmap.shape)):20s} {stride:4d}{note}")

# %% [markdown]
# `features.6` ends the stride-8 stage. The stride-16 stage runs from `features.7` to
# `features.13`, with a channel change at `features.11`, and `features.13` is its last block.
# The pair plays the roles of the paper's `layer2` and `layer3`.
#
# ## A small measurement: other layer sets, whole pipeline
#
# The pictures in the core notebook show one image. Here PatchCore runs end to end on every test
# image of one category, with each layer set below and nothing else changed: the reference's
# patch feature (notebook 02), an approximate greedy coreset, k = 1, the default maps. The first
# layer of a set sets the patch grid, the others are aligned to it. To stay quick it fits on the
# first 8 training images only, and runs the backbone once for all sets: one `FeatureExtractor`
# reads every block any set needs. The full benchmark further down uses every training image of
# every category.

# %%
root = ensure_default_dataset(seed=0)  # $PCNOTES_DATA when it is set
categories = list_categories(root)
CATEGORY = categories[min(1, len(categories) - 1)]  # tiles in the embedded set, as in notebook 01
NUM_TRAIN, RATIO = 8, 0.05
LAYER_SETS = [
    ("features.6", "features.13"),  # the default: stride 8 / 16
    ("features.6", "features.10"),  # 8 / 16, the stride-16 block before the channel change
    ("features.10", "features.13"),  # 16 / 16: a 14x14 grid
    ("features.13", "features.16"),  # 16 / 32: deeper and coarser
]

config = PatchCoreConfig(coreset_ratio=RATIO, seed=0)
train = load_split(root, CATEGORY, "train", config)
train_images = torch.stack([train[i]["image"] for i in range(min(NUM_TRAIN, len(train)))])
test = load_split(root, CATEGORY, "test", config)
test_images, test_masks = stack(test)
test_labels = np.asarray(test.labels)

blocks = sorted({block for layers in LAYER_SETS for block in layers}, key=lambda name: int(name.split(".")[1]))
extractor = FeatureExtractor(mobilenet, blocks)
train_maps, test_maps = extractor(train_images), extractor(test_images)  # {block: (B, C, h, w)}


def run_patchcore(layers: tuple[str, ...]) -> dict:
    """Fit on train_maps and score test_maps, reading only `layers`; the metrics, grid and bank size."""
    model = PatchCore(config, layers=layers, patch_feature="mean_mapped")
    train_features, grid = model.patch_features({layer: train_maps[layer] for layer in layers})  # (8*h*w, D)
    test_features, _ = model.patch_features({layer: test_maps[layer] for layer in layers})
    model.fit_features(train_features.numpy(), grid)
    scores, maps = model.score_features(test_features.numpy(), grid, size=(224, 224))  # (B,), (B, 224, 224)
    return {**model.metrics(test_labels, scores, test_masks, maps), "grid": grid, "bank": len(model.memory_bank)}


small = {layers: run_patchcore(layers) for layers in LAYER_SETS}

print(f"{CATEGORY}: {len(train_images)} training images, {len(test)} test images, coreset {RATIO:.0%}")
print(f"{'layers':28s} {'grid':>7s} {'bank':>5s} {'image AUROC':>12s} {'pixel AUROC':>12s} {'AUPRO':>7s}")
for layers, m in small.items():
    grid = "×".join(map(str, m["grid"]))
    print(f"{' + '.join(layers):28s} {grid:>7s} {m['bank']:5d} {m['image_auroc']:12.3f} "
          f"{m['pixel_auroc']:12.3f} {m['aupro']:7.3f}")

# %%
fine = [m["aupro"] for m in small.values() if m["grid"] == (28, 28)]
coarse = [m["aupro"] for m in small.values() if m["grid"] == (14, 14)]
print(f"AUPRO on a 28×28 grid: {min(fine):.3f} to {max(fine):.3f}; on a 14×14 grid: {min(coarse):.3f} to {max(coarse):.3f}")
if read_manifest(root) is not None:  # a claim about the embedded data set
    assert min(fine) > max(coarse)

# %% [markdown]
# **Resolution drives localisation.** Both sets on the 28×28 grid localise the defects better
# (AUPRO, pixel AUROC) than both sets on the 14×14 grid, and the deeper context of `features.16`
# does not make up for the coarser grid. Which stride-16 block joins `features.6` barely matters.
# A 14×14 grid also holds a quarter of the patches, so its memory bank is a quarter of the size:
# localisation is traded for memory and speed.
#
# ## The full benchmark
#
# `benchmarks/mobilenet_layers.py` runs the same comparison with every training image of every
# category, through `pcnotes.app.evaluation.evaluate_category`, and adds `features.6` alone and
# `features.3` + `features.6` (a 56×56 grid, four times the patches). That takes far longer than
# a notebook should, so this notebook does not run it. It reads the results file the script
# writes at the end of its run. To create or refresh it, run from the repository root:
#
# ```bash
# .venv/bin/python benchmarks/mobilenet_layers.py            # every category of the data set
# .venv/bin/python benchmarks/mobilenet_layers.py --root DIR  # your own data in the MVTec AD layout
# ```
#
# then re-run this notebook. The times in the file are wall-clock on the machine that ran it:
# compare them only within one file.

# %%
RESULTS = results_dir() / "mobilenet_layers.json"
record = json.loads(RESULTS.read_text()) if RESULTS.is_file() else None
if record is None:
    print(f"{display_path(RESULTS)} does not exist yet: run benchmarks/mobilenet_layers.py to write it.")
else:
    data = record["data"]
    print(f"{display_path(RESULTS)}: data {data['root']} ({data['generator'] or 'not drawn by pcnotes.data.synth'}), "
          f"coreset {record['config']['coreset_ratio']:.0%} {record['config']['sampler']}, "
          f"pcnotes {record['versions']['pcnotes']}")
    print(f"{'layers':36s} {'strides':>8s} {'image AUROC':>12s} {'pixel AUROC':>12s} {'AUPRO':>7s} "
          f"{'bank':>6s} {'fit + predict':>14s}")
    for candidate in record["candidates"]:
        mean = candidate["mean"]
        name = " + ".join(candidate["layers"]) + (" (default)" if candidate["default"] else "")
        strides = " / ".join(map(str, candidate["strides"]))
        print(f"{name:36s} {strides:>8s} {mean['image_auroc']:12.3f} {mean['pixel_auroc']:12.3f} "
              f"{mean['aupro']:7.3f} {mean['memory_bank_size']:6.0f} {mean['seconds']:12.0f} s")

# %% [markdown]
# How to read it:
#
# * **Resolution against cost.** Pixel AUROC and AUPRO follow the grid that the first layer sets,
#   as in the small measurement above. The finer grid of `features.3` costs four times the
#   patches, so a four times larger memory bank and a longer coreset selection and search.
# * **Image AUROC moves in steps.** One wrongly ordered (good, defective) pair of test images
#   costs a category `1 / (good × defective)` of its AUROC. The next cell prints that step: an
#   image AUROC difference of one or two steps is one or two pairs, not a trend.
# * **The default is a compromise.** `features.6` + `features.13` is the same choice as the
#   paper's `layer2` + `layer3`, which its ablation on MVTec AD favoured. The synthetic defects
#   are easy, so several stride-8 sets may tie on this data; on your own data, rerun the
#   benchmark with `--root`.

# %%
for category in categories:
    labels = np.asarray(load_split(root, category, "test", config).labels)
    good, defective = int((labels == 0).sum()), int((labels == 1).sum())
    print(f"{category}: {good} good × {defective} defective test images, one pair = {1 / (good * defective):.4f} AUROC")

# %% [markdown]
# ## Summary
#
# * Hooks also measure: one per convolution counts the multiply-adds; stopping after `layer3`
#   skips `layer4` and the head.
# * `features.6` and `features.13` are the last blocks of `mobilenet_v2`'s stride-8 and stride-16
#   stages, its counterparts of `layer2` and `layer3`.
# * The grid the first layer sets decides how well the maps localise, and how many patches the
#   memory bank must hold.
# * The full comparison is `benchmarks/mobilenet_layers.py`; its results file is what this
#   notebook prints.
#
# Back to [01 · Layer hooks](../01_layer_hooks.ipynb), or on to
# [02 · Locally aware patches](../02_locally_aware_patches.ipynb).
