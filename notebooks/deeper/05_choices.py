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
# # 05 deeper · Failures and choices: the hardest images, two patch features, random weights, your photographs
#
# Continues [05 · Evaluation](../05_evaluation.ipynb). Reading for after class, and for anyone
# who brings their own images: the same small configuration as the core notebook (16 training
# images per category, the backbone run once per image), then the hardest images and three
# choices, measured.
#
# **Learning goals.** After this notebook you can
#
# 1. find the images the model gets most wrong, and say why;
# 2. compare `mean_mapped` and `pooled_concat` on every category;
# 3. say what ImageNet weights add over random ones, and on which metric;
# 4. choose crop or whole image, patch feature and resolution for your own photographs.

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
# JPEG: photos of textures stay small in the .ipynb
# %config InlineBackend.figure_formats = ["jpeg"]
import json

import matplotlib.pyplot as plt
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
from pcnotes.app.plots import add_colorbar, draw_mask_contour, overlay_heatmap, shared_scale, show_image
from pcnotes.stages import coreset_size

SEED = 0
torch.manual_seed(SEED)
plt.rcParams["figure.dpi"] = 80
SCORE_LABEL = "anomaly score (Euclidean distance in feature space)"

# %% [markdown]
# ## The backbone runs once per image
#
# A small, fast configuration: 16 training images per category, the whole test set. Each image
# goes once through the backbone with ImageNet weights and once with seeded random ones; every
# experiment reuses these feature maps. On all training images: `python -m pcnotes evaluate`.

# %%
# NBVAL_CHECK_OUTPUT
root = ensure_default_dataset(seed=SEED)  # $PCNOTES_DATA when it is set
EMBEDDED = read_manifest(root) is not None  # the generated set: claims about it are asserted
config = PatchCoreConfig(seed=SEED)  # the default: mobilenet_v2, ImageNet, pooled_concat
categories = list_categories(root)
NUM_TRAIN = 16
extractors = {weights: PatchCore(config, weights=weights).extractor for weights in ("imagenet", "random")}


@torch.no_grad()
def feature_maps(extractor, images: torch.Tensor) -> dict[str, torch.Tensor]:
    """``(N, 3, H, W)`` -> ``{layer: (N, C, h, w)}``, in batches of 8."""
    batches = [extractor(images[i : i + 8]) for i in range(0, len(images), 8)]
    return {layer: torch.cat([batch[layer] for batch in batches]) for layer in batches[0]}


data = {}
for category in categories:
    train, test = load_split(root, category, "train", config), load_split(root, category, "test", config)
    train_images = torch.stack([train[i]["image"] for i in range(min(NUM_TRAIN, len(train)))])
    test_images, masks = stack(test)
    data[category] = {"test": test, "images": test_images, "masks": masks, "labels": np.asarray(test.labels),
                      "maps": {w: (feature_maps(e, train_images), feature_maps(e, test_images))
                               for w, e in extractors.items()}}
    shapes = ", ".join(f"{layer} {tuple(fmap.shape[1:])}" for layer, fmap in data[category]["maps"]["imagenet"][1].items())
    print(f"{category}: train {len(train_images)}, test {len(test)} ({int(data[category]['labels'].sum())} defective); {shapes}")

# %% [markdown]
# From feature maps to metrics: the stages of notebooks 02–04, with the default 10 % coreset of
# the approximate greedy sampler (`config.sampler`, notebook 03's deep dive).

# %%
def evaluate(category: str, weights: str = "imagenet", patch_feature: str = config.patch_feature) -> dict:
    """Fit on the train feature maps, score the test set: scores (N,), maps (N, H, W), metrics."""
    d = data[category]
    train_maps, test_maps = d["maps"][weights]
    model = PatchCore(config, weights=weights, patch_feature=patch_feature)
    train_features, grid = model.patch_features(train_maps)
    test_features, _ = model.patch_features(test_maps)
    model.fit_features(train_features.numpy(), grid)
    scores, maps = model.score_features(test_features.numpy(), grid, size=tuple(d["images"].shape[-2:]))
    return {"scores": scores, "maps": maps, "bank": model.memory_bank.shape,
            "metrics": model.metrics(d["labels"], scores, d["masks"], maps)}


# %% [markdown]
# ## Every category, default configuration

# %%
results = {(category, "imagenet", config.patch_feature): evaluate(category) for category in categories}
default = {category: results[category, "imagenet", config.patch_feature] for category in categories}


def print_row(name: str, m: dict) -> None:
    print(f"{name:38s} {m['image_auroc']:11.3f} {m['pixel_auroc']:11.3f} {m['aupro']:7.3f}")


print(f"{'category, memory bank':38s} {'image AUROC':>11s} {'pixel AUROC':>11s} {'AUPRO':>7s}")
for category, result in default.items():
    print_row(f"{category}, bank {result['bank']}", result["metrics"])
for category, result in default.items():
    m = result["metrics"]
    assert not EMBEDDED or (m["image_auroc"] > 0.9 and m["pixel_auroc"] > 0.95 and m["aupro"] > 0.85), (category, m)


# %% [markdown]
# ## Where the model fails
#
# Per category, the **highest-scored good image** and the **lowest-scored defective image**, the
# true defect outlined, maps on the category's colour scale.

# %%
def hardest(labels: np.ndarray, scores: np.ndarray) -> tuple[int, int]:
    """Indices of the highest-scored good image and the lowest-scored defective image."""
    good, defective = np.flatnonzero(labels == 0), np.flatnonzero(labels == 1)
    return int(good[np.argmax(scores[good])]), int(defective[np.argmin(scores[defective])])


hard_cases = {category: hardest(data[category]["labels"], default[category]["scores"]) for category in categories}
for category, (top_good, low_defect) in hard_cases.items():
    test, scores = data[category]["test"], default[category]["scores"]
    print(f"{category}: top good {scores[top_good]:.2f} ({test.paths[top_good].split('/test/')[1]}), lowest "
          f"defective {scores[low_defect]:.2f} ({test.paths[low_defect].split('/test/')[1]}), "
          f"margin {scores[low_defect] - scores[top_good]:+.2f}")

# %%
fig, axes = plt.subplots(len(categories), 4, figsize=(12, 2.9 * len(categories)), squeeze=False)
for row, category in enumerate(categories):
    d, result = data[category], default[category]
    vmin, vmax = shared_scale(result["maps"])  # one colour scale per category
    for column, i, what in zip((0, 2), hard_cases[category], ("highest good", "lowest defect")):
        show_image(axes[row, column], d["images"][i])
        draw_mask_contour(axes[row, column], d["masks"][i])
        axes[row, column].set_title(f"{category}: {what}\n{d['test'].defects[i]}, score {result['scores'][i]:.2f}",
                                    fontsize=9)
        overlay_heatmap(axes[row, column + 1], d["images"][i], result["maps"][i], vmin=vmin, vmax=vmax)
        axes[row, column + 1].set_title("anomaly map", fontsize=9)
    add_colorbar(fig, axes[row, :], vmin, vmax, "anomaly score\n(Euclidean distance\nin feature space)", shrink=0.9)

# %% [markdown]
# The lowest defects change little (a dark stain on a dark weave, a thin scratch along the
# grain); the top good images light up at the border, where features see zero padding.

# %% [markdown]
# ## Two patch features
#
# From notebook 02: `mean_mapped` (the reference's mean mappers and aggregator, 1024-d) and
# `pooled_concat` (3×3 average pool per layer, channels concatenated, 128-d here):

# %%
for category in categories:
    results[category, "imagenet", "mean_mapped"] = evaluate(category, "imagenet", "mean_mapped")


def mean_metrics(weights: str, patch_feature: str) -> dict:
    return {key: float(np.mean([results[c, weights, patch_feature]["metrics"][key] for c in categories]))
            for key in ("image_auroc", "pixel_auroc", "aupro")}


def print_table(rows) -> None:
    print(f"{'':38s} {'image AUROC':>11s} {'pixel AUROC':>11s} {'AUPRO':>7s}")
    for weights, patch_feature in rows:
        for category in categories:
            result = results[category, weights, patch_feature]
            print_row(f"{category}, {weights}, {patch_feature} {result['bank'][1]}-d", result["metrics"])
        print_row(f"mean, {weights}, {patch_feature}", mean_metrics(weights, patch_feature))


print_table([("imagenet", "mean_mapped"), ("imagenet", "pooled_concat")])

# %%
gap = {key: abs(mean_metrics("imagenet", "mean_mapped")[key] - mean_metrics("imagenet", "pooled_concat")[key])
       for key in ("image_auroc", "pixel_auroc", "aupro")}
print("mean difference between the two features:", {key: round(value, 3) for key, value in gap.items()})
assert not EMBEDDED or max(gap.values()) < 0.03

# %% [markdown]
# On these drawn textures the two features score about the same, and `pooled_concat` is 8×
# shorter: a smaller bank and a faster search. Why it is mobilenet_v2's default: the reference's
# 1024-d mean mapper stretches the shallow layer's 32 × 9 values to 1024, and gives the deeper
# layer, with three times the channels, the same half of the vector. For wide_resnet50_2 (512
# and 1024 channels) that fits, and stays its default. Which suits *your* photographs,
# `real_data.py` measures (below).
#
# ## Are ImageNet features needed?
#
# The same mobilenet_v2 with seeded random weights:

# %%
for category in categories:
    results[category, "random", config.patch_feature] = evaluate(category, "random")
print_table([("imagenet", config.patch_feature), ("random", config.patch_feature)])
for key in ("image_auroc", "pixel_auroc", "aupro"):
    loss = mean_metrics("imagenet", config.patch_feature)[key] - mean_metrics("random", config.patch_feature)[key]
    print(f"{key}: ImageNet minus random weights, mean over categories: {loss:+.3f}")
gaps = {c: results[c, "imagenet", config.patch_feature]["metrics"]["aupro"]
        - results[c, "random", config.patch_feature]["metrics"]["aupro"] for c in categories}
print(f"AUPRO gap smallest on {min(gaps, key=gaps.get)} ({min(gaps.values()):+.3f}), "
      f"largest on {max(gaps, key=gaps.get)} ({max(gaps.values()):+.3f})")
if EMBEDDED:
    assert mean_metrics("imagenet", config.patch_feature)["aupro"] > mean_metrics("random", config.patch_feature)["aupro"]
    assert min(results[c, "random", config.patch_feature]["metrics"]["image_auroc"] for c in categories) > 0.85

# %% [markdown]
# Random weights are far from useless here. Random 3×3 convolutions still respond to edges,
# colour and contrast, and the drawn defects break a regular texture with exactly such changes.
# On the category printed as the smallest gap they come close to ImageNet, and a test on that
# category alone can even show them ahead. Over all categories ImageNet wins, most clearly in
# AUPRO: telling a faint defect from unusual normal texture takes features that know textures.
# How far random features fall on real photographs these textures cannot show;
# `real_data.py --weights random` measures it (next section).
#
# More sweeps (backbones, coreset ratios, random coresets):
# [05_sweeps](05_sweeps.ipynb).

# %% [markdown]
# ## Your own photographs
#
# Three options matter (`python -m pcnotes evaluate --help`):
#
# * **Crop or whole image.** The default resizes the shorter side to 256 and keeps the centre
#   224 × 224. Of an elongated photograph that keeps only the middle, and a defect near an end
#   is cut away while the image stays labelled defective. `--resize 256x608` (height × width;
#   the crop is then `none`) keeps the whole image; in the config, `resize=(256, 608), crop=None`.
# * **Patch feature:** `--patch-feature mean_mapped|pooled_concat`.
# * **Resolution against time.** The grid follows the input at stride 8; the bank, the coreset
#   and the kNN search all grow with the patches (next cell).
#
# `benchmarks/real_data.py --data-root DIR` evaluates a folder in MVTec AD layout
# (`CATEGORY/train/good`, `CATEGORY/test/DEFECT`, `CATEGORY/ground_truth/DEFECT`) under a grid of
# these options, and writes `benchmarks/results/real_data_NAME.json`; the cell after next prints it.

# %%
# NBVAL_CHECK_OUTPUT
probe = PatchCore(config)
for height, width in ((224, 224), (320, 320), (256, 608)):
    _, grid = probe.embed(torch.zeros(1, 3, height, width))
    patches = grid[0] * grid[1]
    print(f"input {height}x{width}: grid {grid[0]}x{grid[1]}, {patches} patches per image, "
          f"memory bank of {coreset_size(NUM_TRAIN * patches, config.coreset_ratio)} for {NUM_TRAIN} images at 10 %")

# %%
files = sorted(results_dir().glob("real_data_*.json"))
if not files:
    print("no benchmarks/results/real_data_*.json yet: run benchmarks/real_data.py --data-root DIR")
for path in files:
    record = json.loads(path.read_text())
    print(f"{display_path(path)}: {len(record['categories'])} categories, {record['backbone']} "
          f"({record['weights']}), coreset {record['coreset_ratio']}")
    for result in record["results"]:
        mean = result["mean"]
        print(f"  {result['option']:28s} D {mean['feature_dim']:5d}  image AUROC {mean['image_auroc']:.3f}  "
              f"pixel AUROC {mean['pixel_auroc']:.3f}  AUPRO {mean['aupro']:.3f}")

# %% [markdown]
# The [paper](https://arxiv.org/abs/2106.08265) and
# [patchcore-inspection](https://github.com/amazon-science/patchcore-inspection) report MVTec AD
# with wide_resnet50_2; we differ in backbone, data and training-set size.
