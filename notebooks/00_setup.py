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
# # 00 · Setup: the tools, the weights and the data
#
# **Learning goals.** After this notebook you can
#
# 1. say in three sentences what PatchCore does, and name the stage each later notebook builds;
# 2. check which library versions and which device you are running on;
# 3. tell which backbone weights are loaded, from which file, and why `pcnotes` refuses to
#    continue with random weights unless you ask for them;
# 4. find your way around the small defect data set that ships with this project (as a generator)
#    and see how one of its images is drawn.
#
# Nothing is trained in this series. Every number comes from a frozen ImageNet network plus
# nearest-neighbour search.

# %% [markdown]
# ## PatchCore in three sentences
#
# 1. A frozen ImageNet network describes every small patch of a **normal** training image by one
#    feature vector, taken from its middle layers and enriched with each patch's 3×3 neighbourhood.
# 2. All these vectors go into a **memory bank**. A greedy *coreset* thins the bank to about 1–10 %
#    of its size while every left-out vector stays close to a kept one.
# 3. At test time each patch's **distance to its nearest neighbour in the bank** is its anomaly
#    score. The largest patch score is the image score, and the upsampled grid of patch scores
#    is the heat map.
#
# ## Road map
#
# | notebook | stage | what you build |
# | --- | --- | --- |
# | **00 setup** | – | versions, weights, the data set |
# | **01 layer hooks** | 1 | forward hooks that read two middle layers and stop the forward pass early |
# | **02 locally aware patches** | 2–4 | `unfold` into 3×3 patches, align the layers, pool to 1024-d patch features |
# | **03 coreset** | 5 | random vs greedy vs approximate greedy subsampling of the memory bank |
# | **04 scoring and heat maps** | 6–7 | kNN patch scores, image scores (with the paper's eq. 7), anomaly maps |
# | **05 evaluation** | 8 | image AUROC, pixel AUROC and AUPRO on every category |
# | **06 coreset explorer** | – | widgets: move the coreset ratio and watch memory, speed and accuracy |
#
# The data flow, with the shapes for two 224×224 images on the paper's `wide_resnet50_2`:
#
# ```text
# images (B, 3, 224, 224)
#   │  01  forward hooks on layer2, layer3
#   ▼
# {layer2: (B, 512, 28, 28), layer3: (B, 1024, 14, 14)}
#   │  02  patchify (3×3 unfold)     → (B, 784, 512, 3, 3), (B, 196, 1024, 3, 3)
#   │  02  align layer3 to 28×28     → (B, 784, 1024, 3, 3)
#   │  02  mean map per layer        → (B·784, 2, 1024)
#   │  02  aggregate                 → (B·784, 1024)           one vector per patch
#   ▼
# training: all patches of all normal images (N, 1024)
#   │  03  coreset (e.g. 10 %)       → memory bank (M, 1024)
#   ▼
# test: (B·784, 1024) patches
#   │  04  kNN distance to the bank  → (B·784,) → (B, 28, 28) → maps (B, 224, 224), scores (B,)
#   ▼
# 05  metrics: image AUROC, pixel AUROC, AUPRO
# ```

# %%
# %matplotlib inline
# JPEG: photos of textures stay small in the .ipynb (as PNG, one figure is ~0.5 MB)
# %config InlineBackend.figure_formats = ["jpeg"]
import platform
from pathlib import Path

import faiss
import matplotlib.pyplot as plt
import numpy as np
import torch
import torchvision

import pcnotes
from pcnotes.backbone import MOBILENET_SHA256, MOBILENET_WEIGHTS, load_backbone, sha256sum
from pcnotes.data import MVTecDataset, list_categories, list_defects, load_mask, load_rgb
from pcnotes.paths import display_path
from pcnotes.synth import (
    add_defect,
    ensure_default_dataset,
    read_manifest,
    render_sample,
    render_texture,
)

torch.manual_seed(0)
plt.rcParams["figure.dpi"] = 80

# %% [markdown]
# ## What is installed
#
# These versions vary between machines, so nbval does not compare this cell's output. If a later
# notebook behaves differently from what its text says, check these first.

# %%
versions = {
    "python": platform.python_version(),
    "torch": torch.__version__,
    "torchvision": torchvision.__version__,
    "faiss": faiss.__version__,
    "numpy": np.__version__,
    "pcnotes": pcnotes.__version__,
}
for name, version in versions.items():
    print(f"{name:12s} {version}")

# %% [markdown]
# Everything in this series runs on the **CPU**: a forward pass of a few images through a small
# network and a nearest-neighbour search over a few thousand vectors are quick enough. The next
# cell only reports what torch can see.

# %%
print("CUDA GPU visible to torch:", torch.cuda.is_available(), "(the notebooks use the CPU either way)")
print("CPU threads torch uses:", torch.get_num_threads())

# %% [markdown]
# ## Which backbone weights are loaded
#
# The paper uses `wide_resnet50_2` pretrained on ImageNet. Its weights (about 130 MB) come from
# torchvision's download server. This project has to run on machines with no internet, so the
# default backbone is **`mobilenet_v2`**. Its ImageNet feature weights ship with the repository
# in `data/`, and their sha256 is checked on every load. A replaced or truncated file therefore
# fails loudly instead of giving quietly wrong features.
#
# `load_backbone` returns the network **and** a `LoadedWeights` record. It states which weights
# the network holds, so no notebook has to guess.

# %%
backbone, weights = load_backbone("mobilenet_v2")  # weights="imagenet" is the default
print(weights)  # the path depends on where the repository lives: not checked by nbval

# %%
# NBVAL_CHECK_OUTPUT
assert weights.kind == "imagenet" and Path(weights.source) == MOBILENET_WEIGHTS
print("kind:", weights.kind)
print("file:", Path(weights.source).name)
print("sha256 matches the one pinned in pcnotes.backbone:", sha256sum(MOBILENET_WEIGHTS) == MOBILENET_SHA256)
n_features = sum(p.numel() for p in backbone.features.parameters())
n_classifier = sum(p.numel() for p in backbone.classifier.parameters())
print(f"parameters: {n_features:,} in `features` (loaded), {n_classifier:,} in the classifier head")

# %% [markdown]
# The shipped file holds only the convolutional `features` part. The classifier head keeps
# torchvision's random initialisation, and that is harmless: PatchCore stops the forward pass
# at a middle layer long before the head (notebook 01), so the head never runs.
#
# ### Asking for the paper's backbone
#
# `load_backbone("wide_resnet50_2")` asks torchvision for the ImageNet weights. It uses the copy
# in the torch cache if there is one, and downloads them otherwise. Without internet and without
# a cached copy, the download fails within a second or two. `pcnotes` then raises an error that
# names the file to fetch and where to put it. It **never** falls back to random weights on its
# own: random features would give meaningless anomaly scores that look like real ones. Random
# weights are used only when you say `weights="random"`. We do that in notebooks 01 and 02,
# where only the tensor *shapes* matter.
#
# The cell below runs both offline and online and prints which of the two happened.

# %%
try:
    paper_backbone, paper_weights = load_backbone("wide_resnet50_2")
except RuntimeError as error:
    print("offline: no ImageNet weights for wide_resnet50_2, and no silent fallback.")
    print("first line of the error:", str(error).splitlines()[0][:160], "...")
else:
    print("online (or cached): loaded", paper_weights)
    print(f"parameters: {sum(p.numel() for p in paper_backbone.parameters()):,}")
    del paper_backbone

# %% [markdown]
# ## The embedded data set
#
# MVTec AD, the benchmark of the paper, is large (about 5 GB) and its licence forbids commercial
# use. This project does not bundle it. `pcnotes.synth` **draws** a small defect data set instead,
# from a seed, using only numpy, scipy and PIL. It has three texture categories, each with four
# kinds of defect and a pixel mask for every defective image. It is written in MVTec AD's folder
# layout, so everything here also runs on the real data: point `PCNOTES_DATA` at it.
#
# `ensure_default_dataset()` draws the set the first time it is called (about 15 s) and returns
# its folder afterwards. A `manifest.json` with the seed, the generator version and the sha256 of
# every file tells later calls that the set is complete.

# %%
root = ensure_default_dataset(seed=0)
print(display_path(root))  # relative to the repository when it lies inside it
manifest = read_manifest(root)
print("generated by pcnotes.synth:", manifest is not None)
# categories and defect kinds come from the folders, so these cells also run on MVTec AD
categories = list_categories(root)
defects = {category: list_defects(root, category) for category in categories}

# %% [markdown]
# The MVTec layout: the `train` split holds only `good` images, because PatchCore never sees a
# defect while it is fitted. The `test` split holds good images plus one folder per defect kind.
# `ground_truth` has one mask per defective test image, with the same name plus `_mask`.

# %%
# NBVAL_CHECK_OUTPUT
def count_png(folder: Path) -> int:
    return len(list(folder.glob("*.png")))


for category in categories:
    print(f"{category}/")
    for split in ("train", "test", "ground_truth"):
        print(f"  {split}/")
        for folder in sorted(p for p in (root / category / split).iterdir() if p.is_dir()):
            print(f"    {folder.name + '/':16s} {count_png(folder):3d} png")

# %% [markdown]
# What the pipeline receives is not the 256×256 PNG. `MVTecDataset` resizes it to 256, crops the
# centre 224×224 and normalises with the ImageNet mean and std, exactly as the reference code
# does. Masks get the same resize and crop, nearest-neighbour, so they stay strictly 0/1.

# %%
# NBVAL_CHECK_OUTPUT
category = categories[-1]  # wood in the embedded set
test_set = MVTecDataset(root, category, "test")
item = test_set[len(test_set) - 1]  # the last item: a defective one
print(f"items in {category}/test:", len(test_set), "  defective:", sum(test_set.labels))
print("image:", tuple(item["image"].shape), item["image"].dtype)
print("mask: ", tuple(item["mask"].shape), "values:", sorted(item["mask"].unique().tolist()))
print("label:", item["label"], " defect:", item["defect"])
assert item["image"].shape == (3, 224, 224) and item["mask"].shape == (1, 224, 224)

# %% [markdown]
# ### Normal images
#
# PatchCore learns "normal" only from these. Within a category the images differ in phase, a small
# rotation, spacing, colour, brightness and fine noise, but they all come from one distribution.
# A good anomaly detector has to ignore that variation.

# %%
n_show = 4
fig, axes = plt.subplots(len(categories), n_show, figsize=(2.2 * n_show, 2.3 * len(categories)),
                         squeeze=False)
for row, category in enumerate(categories):
    paths = sorted((root / category / "train" / "good").glob("*.png"))[:n_show]
    for ax, path in zip(axes[row], paths):
        ax.imshow(load_rgb(path))
        ax.set_title(f"{category}/{path.name}", fontsize=8)
        ax.axis("off")
fig.suptitle("train/good: what PatchCore learns as normal")
fig.tight_layout()

# %% [markdown]
# ### Defects and their masks
#
# One test image per defect kind, with the ground-truth mask drawn as a red contour. The defects
# cover roughly 0.2–4 % of an image, about as much as in MVTec AD. Some are bright and obvious,
# others are a faint stain or one misplaced thread, and the heat maps in notebook 04 have to find
# both.

# %%
n_cols = max(len(d) for d in defects.values())
fig, axes = plt.subplots(len(categories), n_cols, figsize=(2.2 * n_cols, 2.3 * len(categories)),
                         squeeze=False)
for ax in axes.flat:
    ax.axis("off")  # also the empty panels of a category with fewer defect kinds
for row, category in enumerate(categories):
    for ax, defect in zip(axes[row], defects[category]):
        image = load_rgb(root / category / "test" / defect / "000.png")
        mask = np.asarray(load_mask(root / category / "ground_truth" / defect / "000_mask.png")) > 127
        ax.imshow(image)
        ax.contour(mask, levels=[0.5], colors="red", linewidths=1)
        ax.set_title(f"{category}: {defect} ({100 * mask.mean():.1f} %)", fontsize=8)
fig.suptitle("test/<defect> with the ground-truth mask (red contour, % of pixels)")
fig.tight_layout()

# %% [markdown]
# ### How one image is drawn
#
# Every image takes two calls. `render_texture(category, rng)` draws a normal texture, and
# `add_defect(image, defect, rng)` paints one defect onto it. It returns the new image and the
# mask of the pixels it changed visibly. Both take a numpy `Generator`, so the same seed always
# gives the same picture.

# %%
rng = np.random.default_rng(7)  # the generator's own names: this cell draws, it reads no data set
texture = render_texture("wood", rng, size=256)
defective, mask = add_defect(texture, "scratch", rng, category="wood")
assert texture.shape == defective.shape == (256, 256, 3) and mask.shape == (256, 256)

fig, axes = plt.subplots(1, 3, figsize=(7.5, 2.8))
panels = [(texture, "render_texture"), (defective, "add_defect"), (mask, "mask")]
for ax, (picture, title) in zip(axes, panels):
    ax.imshow(picture, cmap="gray")
    ax.set_title(title, fontsize=9)
    ax.axis("off")
fig.tight_layout()

# %% [markdown]
# The data set files come from exactly these two calls. Each image gets its own generator, seeded
# from `(seed, category, folder, index)`, so `render_sample` can redraw any single file without
# the others. This is how we know that the images on disk are the ones the code describes.

# %%
# NBVAL_CHECK_OUTPUT
if manifest is not None:  # a generated set (not real MVTec data via PCNOTES_DATA)
    redrawn, redrawn_mask = render_sample("wood", "test/scratch", 0, seed=manifest["seed"])
    on_disk = np.asarray(load_rgb(root / "wood" / "test" / "scratch" / "000.png"))
    on_disk_mask = np.asarray(load_mask(root / "wood" / "ground_truth" / "scratch" / "000_mask.png"))
    same = np.array_equal(redrawn, on_disk) and np.array_equal(redrawn_mask, on_disk_mask)
    print("wood/test/scratch/000.png and its mask redrawn bit for bit:", same)
    assert same
else:
    print("not a generated data set: nothing to redraw")

# %% [markdown]
# ## Summary
#
# * PatchCore = frozen middle-layer features of local patches, a coreset memory bank of normal
#   patches, and nearest-neighbour distance as the anomaly score. The notebooks build it in that
#   order.
# * The default backbone is `mobilenet_v2`. Its ImageNet weights ship with the project and are
#   checked by sha256. The paper's `wide_resnet50_2` needs a download, and `pcnotes` raises
#   instead of silently using random weights.
# * The data set is drawn from a seed in the MVTec AD layout: 3 categories × (48 train, 12 good
#   test, 4 defects × 6) images. Each image comes from `render_texture` + `add_defect`.
#
# ## Exercise
#
# Draw a **fourth variation** of the same file, `tiles/test/crack/000.png`, with the seeds
# 0, 1, 2 and 3 of the whole data set (`render_sample(..., seed=s)`). Show the four next to each
# other with their masks. What changes from seed to seed, and what stays the same? Then count how
# many mask pixels each crack covers.
#
# *Try it before you open the solution below.*

# %% [markdown]
# ### Solution

# %%
fig, axes = plt.subplots(2, 4, figsize=(9, 4.6))
for column, seed in enumerate(range(4)):
    image, crack_mask = render_sample("tiles", "test/crack", 0, seed=seed)
    axes[0, column].imshow(image)
    axes[0, column].set_title(f"seed {seed}", fontsize=9)
    axes[1, column].imshow(crack_mask, cmap="gray")
    axes[1, column].set_title(f"mask: {int((crack_mask > 127).sum())} px", fontsize=9)
for ax in axes.flat:
    ax.axis("off")
fig.tight_layout()
# The tile size, colour, grout and the crack's path and length change with the seed. That it is
# a grid of glazed tiles with one thin dark crack stays the same, so the category stays one
# distribution. Seed 0 is the file on disk.
