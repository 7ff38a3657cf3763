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
# # 00 deeper · How the embedded data set is drawn
#
# Continues [00 · Setup](../00_setup.ipynb), after *Defects and their masks*. Reading for after
# class: nothing in the core path depends on it.
#
# **Learning goals.** After this notebook you can
#
# 1. draw a normal texture and paint a defect onto it with the two calls the data set is made of;
# 2. redraw any single file of the data set from its seed, and check it against the file on disk;
# 3. say what varies within a category and what stays the same;
# 4. say what the pipeline receives from a file: the resize, the crop and the mask's treatment.

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
import matplotlib.pyplot as plt
import numpy as np

from pcnotes import MVTecDataset, ensure_default_dataset, list_categories, load_mask, load_rgb, read_manifest
from pcnotes.data.synth import add_defect, render_sample, render_texture

plt.rcParams["figure.dpi"] = 80

# %% [markdown]
# ## Two calls per image
#
# `render_texture(category, rng)` draws a normal texture. `add_defect(image, defect, rng)`
# paints one defect onto it, and returns the new image and the mask of the pixels it changed
# visibly. Both take a numpy `Generator`, so the same seed always gives the same picture. This
# cell only draws: it uses the generator's own names and reads no data set.

# %%
# NBVAL_CHECK_OUTPUT
category, defect = "wood", "scratch"  # the generator's own names (pcnotes.data.synth.DEFECTS)
rng = np.random.default_rng(7)
texture = render_texture(category, rng, size=256)
defective, mask = add_defect(texture, defect, rng, category=category)
assert texture.shape == defective.shape == (256, 256, 3) and mask.shape == (256, 256)
print(f"{category} + {defect}: image {defective.shape} {defective.dtype}, mask {mask.shape}, "
      f"{(mask > 127).mean():.2%} of the pixels")

fig, axes = plt.subplots(1, 3, figsize=(7.5, 2.8))
for ax, (picture, title) in zip(axes, [(texture, "render_texture"), (defective, "add_defect"), (mask, "mask")]):
    ax.imshow(picture, cmap="gray")
    ax.set_title(title, fontsize=9)
    ax.axis("off")
fig.tight_layout()

# %% [markdown]
# ## Every file can be redrawn on its own
#
# Each file gets its own generator, seeded from `(seed, category, folder, index)`, so
# `render_sample` redraws any single file without drawing the others. If the data set on disk
# was drawn by `pcnotes.data.synth` (it has a manifest), the redrawn image and mask must equal the
# files bit for bit. This is how we know the images on disk are the ones the code describes.

# %%
# NBVAL_CHECK_OUTPUT
root = ensure_default_dataset(seed=0)  # $PCNOTES_DATA when it is set
manifest = read_manifest(root)
if manifest is not None and category in list_categories(root):
    folder = f"test/{defect}"
    redrawn, redrawn_mask = render_sample(category, folder, 0, seed=manifest["seed"])
    on_disk = np.asarray(load_rgb(root / category / folder / "000.png"))
    on_disk_mask = np.asarray(load_mask(root / category / "ground_truth" / defect / "000_mask.png"))
    same = np.array_equal(redrawn, on_disk) and np.array_equal(redrawn_mask, on_disk_mask)
    print(f"{category}/{folder}/000.png and its mask redrawn bit for bit:", same)
    assert same
else:
    print("not a data set drawn by pcnotes.data.synth: nothing to redraw")

# %% [markdown]
# ## What varies within a category
#
# Redraw one file, `tiles/test/crack/000.png`, with the data-set seeds 0 to 3
# (`render_sample(..., seed=s)`). **Before you run the cell:** what will change from seed to
# seed, and what will stay the same?

# %% [markdown] tags=["solution"]
# *Answer.* The tile size, the colours, the grout and the crack's path and length change: each
# seed is a new draw. What stays is a grid of glazed tiles with one thin dark crack, which is
# what makes the category one distribution that PatchCore can learn as "normal". Seed 0 is the
# file on disk.

# %%
fig, axes = plt.subplots(2, 4, figsize=(9, 4.6))
for column, seed in enumerate(range(4)):
    image, seed_mask = render_sample("tiles", "test/crack", 0, seed=seed)
    axes[0, column].imshow(image)
    axes[0, column].set_title(f"seed {seed}", fontsize=9)
    axes[1, column].imshow(seed_mask, cmap="gray")
    axes[1, column].set_title(f"mask: {int((seed_mask > 127).sum())} px", fontsize=9)
for ax in axes.flat:
    ax.axis("off")
fig.tight_layout()

# %% [markdown]
# ## What the pipeline receives
#
# Not the PNG as it is: `MVTecDataset` resizes it to 256, crops the centre 224×224 and
# normalises with the ImageNet mean and std, as the reference code does. Masks get the same
# resize and crop with nearest neighbours, so they stay strictly 0/1.

# %%
# NBVAL_CHECK_OUTPUT
first = list_categories(root)[0]
test_set = MVTecDataset(root, first, "test")
item = test_set[len(test_set) - 1]  # the last item: a defective one
print("image:", tuple(item["image"].shape), item["image"].dtype)
print("mask: ", tuple(item["mask"].shape), "values:", sorted(item["mask"].unique().tolist()))
print("label:", item["label"])
assert item["image"].shape == (3, 224, 224) and item["mask"].shape == (1, 224, 224)

# %% [markdown]
# ## Summary
#
# * An image of the data set is `render_texture` plus, for a defective one, `add_defect`, each
#   drawn from its own seeded generator.
# * `render_sample` redraws any single file, and on a generated set it equals the file bit for bit.
# * Within a category the draws differ in detail but not in kind.
# * The model sees a 224×224 centre crop of the 256-pixel resize, and a 0/1 mask cut the same way.
#
# Back to [00 · Setup](../00_setup.ipynb), or on to [01 · Layer hooks](../01_layer_hooks.ipynb).
