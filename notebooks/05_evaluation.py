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
# # 05 · Evaluation: how good is it, and where does it fail?
#
# **Learning goals.** After this notebook you can
#
# 1. say what image AUROC, pixel AUROC and AUPRO each reward, and why PRO gives every defect
#    region the same weight;
# 2. evaluate PatchCore on every category of the embedded data set and read the ROC and PRO curves
#    behind the three numbers;
# 3. judge how much the backbone's pretraining and the coreset ratio matter;
# 4. look at the images the model gets most wrong and explain why.
#
# ```text
# per category:  fit on train/good  ->  scores (N,), maps (N, 224, 224) on test/
#                -> image AUROC (labels vs scores), pixel AUROC (masks vs maps), AUPRO (regions vs maps)
# ```

# %% [markdown]
# ## Three metrics, three questions
#
# * **Image AUROC**: *does the image score tell good from defective images?* It is the probability
#   that a randomly drawn defective image scores higher than a randomly drawn good one. It needs
#   no threshold; 1.0 is a perfect ranking and 0.5 is chance.
# * **Pixel AUROC**: the same statistic over **pixels**, with the mask as the label and the
#   anomaly map as the score. It rewards maps that rank defect pixels above good pixels. Every
#   pixel counts once, so one large defect outweighs many small ones. Good pixels are the vast
#   majority, so the value sits close to 1 even for blurry maps.
# * **AUPRO** (per-region overlap): every connected defect region counts as one unit. At a
#   threshold t, a region's *overlap* is the fraction of its pixels with map ≥ t, and PRO(t) is the
#   **mean over regions**. A 20-pixel scratch and a 5000-pixel stain therefore count the same:
#   missing the scratch costs as much as missing the stain. PRO is plotted against the
#   false-positive rate on good pixels, and only the area up to FPR = 0.3 counts (divided by 0.3).
#   Beyond that the map flags so much of the good surface that it is useless in practice.

# %%
# %matplotlib inline
# JPEG: photos of textures stay small in the .ipynb (as PNG, one figure is ~1 MB)
# %config InlineBackend.figure_formats = ["jpeg"]
import matplotlib.pyplot as plt
import numpy as np
import torch

from pcnotes.coreset import select_coreset
from pcnotes.data import list_categories
from pcnotes.evaluation import compute_metrics, evaluate_category, load_split, stack
from pcnotes.maps import anomaly_map
from pcnotes.metrics import label_regions, pro_curve, roc_curve_points
from pcnotes.model import PatchCore, PatchCoreConfig
from pcnotes.patches import scores_to_grid, unpatch_scores
from pcnotes.scoring import NearestNeighbours, image_scores, patch_scores
from pcnotes.synth import ensure_default_dataset, read_manifest
from pcnotes.viz import draw_mask_contour, overlay_heatmap, shared_scale, show_image

SEED = 0
torch.manual_seed(SEED)
plt.rcParams["figure.dpi"] = 80

# %% [markdown]
# ## Every category, default configuration
#
# `evaluate_category` fits PatchCore on a category's `train/good` images and scores its whole
# `test/` folder. The CLI and the explorer call the same function, so they report the same
# numbers. The default configuration is mobilenet_v2 with the shipped ImageNet weights, layers
# `features.6` + `features.13`, an approximate greedy coreset of 10 %, k = 1, and σ = 4.

# %%
# NBVAL_CHECK_OUTPUT
root = ensure_default_dataset(seed=SEED)
config = PatchCoreConfig(seed=SEED)
categories = list_categories(root)  # from the folders, so this also runs on MVTec AD
# The thresholds asserted below are claims about the embedded set; on other data
# (PCNOTES_DATA) the same numbers are printed and not judged.
EMBEDDED = read_manifest(root) is not None
evaluations = {}
for category in categories:
    _, evaluations[category] = evaluate_category(root, category, config)
    m = evaluations[category].metrics
    assert evaluations[category].maps.shape == (m["n_test"], 224, 224)
    print(f"{category:7s} train {m['n_train']}, test {m['n_test']} "
          f"({int(evaluations[category].labels.sum())} defective), memory bank {m['memory_bank_size']} x 1024")

# %% [markdown]
# The metrics (floats: printed here, and checked against thresholds in the next cell rather than
# digit for digit):

# %%
print(f"{'category':9s} {'image AUROC':>12s} {'pixel AUROC':>12s} {'AUPRO':>8s} {'fit s':>7s}")
for category, evaluation in evaluations.items():
    m = evaluation.metrics
    print(f"{category:9s} {m['image_auroc']:12.3f} {m['pixel_auroc']:12.3f} {m['aupro']:8.3f} {m['fit_seconds']:7.1f}")
mean = {key: np.mean([e.metrics[key] for e in evaluations.values()]) for key in ("image_auroc", "pixel_auroc", "aupro")}
print(f"{'mean':9s} {mean['image_auroc']:12.3f} {mean['pixel_auroc']:12.3f} {mean['aupro']:8.3f}")

# %%
for category, evaluation in evaluations.items():
    m = evaluation.metrics
    assert not EMBEDDED or (m["image_auroc"] > 0.9 and m["pixel_auroc"] > 0.95 and m["aupro"] > 0.85), (category, m)

# %% [markdown]
# ## ROC curves
#
# Left: image-level ROC (one point per threshold on the image score). Right: pixel-level ROC
# over all test pixels of the category. The pixel curves hug the left edge: at an FPR of a few
# percent almost every defect pixel is already found. With 224 × 224 good pixels per image, a
# few percent of FPR is still thousands of false-alarm pixels, which is why AUPRO looks only at
# FPR ≤ 0.3 and why a pixel AUROC near 1 says less than it seems to.

# %%
fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
for category, evaluation in evaluations.items():
    fpr, tpr = roc_curve_points(evaluation.labels, evaluation.scores)
    axes[0].plot(fpr, tpr, label=f"{category} ({evaluation.metrics['image_auroc']:.3f})")
    fpr, tpr = roc_curve_points(evaluation.masks.ravel(), evaluation.maps.ravel())
    axes[1].plot(fpr, tpr, label=f"{category} ({evaluation.metrics['pixel_auroc']:.3f})")
for ax, title in zip(axes, ("image-level ROC", "pixel-level ROC")):
    ax.plot([0, 1], [0, 1], "k:", lw=1)
    ax.set_xlabel("false-positive rate")
    ax.set_ylabel("true-positive rate")
    ax.set_title(title)
    ax.legend(fontsize=8, title="AUROC", loc="lower right")
fig.tight_layout()

# %% [markdown]
# ## PRO curves
#
# The connected regions behind PRO. `label_regions` uses 8-connectivity, as MVTec AD's
# evaluation code does. Region sizes vary by two orders of magnitude, and PRO weights them all the
# same.

# %%
for category, evaluation in evaluations.items():
    regions, count = label_regions(evaluation.masks)
    sizes = np.bincount(regions.ravel())[1:]
    print(f"{category:7s} {count:3d} defect regions, {sizes.min():5d} to {sizes.max():5d} pixels "
          f"(median {int(np.median(sizes))})")

# %%
fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
for category, evaluation in evaluations.items():
    fpr, pro = pro_curve(evaluation.masks, evaluation.maps)
    for ax in axes:
        ax.plot(fpr, pro, label=f"{category} (AUPRO {evaluation.metrics['aupro']:.3f})")
for ax, right in zip(axes, (1.0, 0.1)):
    ax.axvline(0.3, color="k", ls="--", lw=1)
    ax.set_xlim(0, right)
    ax.set_xlabel("false-positive rate (good pixels)")
    ax.set_ylabel("PRO: mean overlap per region")
axes[0].text(0.31, 0.05, "FPR = 0.3:\narea counted\nto the left", fontsize=8)
axes[0].set_title("per-region overlap")
axes[1].set_title("zoom: FPR up to 0.1")
axes[0].legend(fontsize=8, loc="lower right")
fig.tight_layout()

# %% [markdown]
# Each curve climbs to 1 within a few percent of FPR; the zoom shows the differences. A region
# counts as fully found only when *all* its pixels are above the threshold. Small or faint regions
# get there only at low thresholds, and those thresholds already flag good pixels. Fabric's curve
# rises last: its stains are faint (see the last section). Because every region weighs the same,
# a few such regions cost AUPRO more than they cost pixel AUROC, which makes AUPRO the most
# demanding of the three numbers.
#
# ## Backbone × coreset ratio on one category
#
# How much do the **ImageNet features** matter, and how small can the **coreset** be? We compare
# three backbones on `wood` (exercise 2 repeats one row on `fabric`, with a surprise):
#
# * mobilenet_v2 with the shipped ImageNet weights (the default);
# * mobilenet_v2 with seeded **random** weights, the same architecture without pretraining;
# * resnet18 with seeded random weights (layers `layer2` + `layer3`).
#
# and two coreset ratios, 1 % and 10 %. To stay quick we use the first 16 training images
# (12 544 patches), as in notebook 04, and extract features **once per backbone**. Both ratios
# reuse them: coreset, kNN, maps and metrics are cheap next to the backbone.
#
# The paper's backbone, wide_resnet50_2, is not in this table: its ImageNet weights come from
# torchvision's download server, and this project runs offline. With random weights it would
# only show what the first two random rows already show.

# %%
# NBVAL_CHECK_OUTPUT
CATEGORY, NUM_TRAIN, RATIOS = categories[-1], 16, (0.01, 0.1)  # wood in the embedded set
train = load_split(root, CATEGORY, "train", config)
train_images = torch.stack([train[i]["image"] for i in range(NUM_TRAIN)])
test = load_split(root, CATEGORY, "test", config)
test_images, test_masks = stack(test)
test_labels = np.asarray(test.labels)

BACKBONES = (("mobilenet_v2", "imagenet"), ("mobilenet_v2", "random"), ("resnet18", "random"))
table, features = {}, {}
for backbone, weights in BACKBONES:
    # a fresh config: each backbone brings its own default layers
    model = PatchCore(PatchCoreConfig(backbone=backbone, weights=weights, seed=SEED))
    train_features, grid = model.extract(train_images)
    test_features, _ = model.extract(test_images)
    features[backbone, weights] = train_features, test_features, grid
    print(f"{backbone} ({weights}): train {train_features.shape}, test {test_features.shape}, grid {grid}")
    for ratio in RATIOS:
        bank = train_features[select_coreset(train_features, ratio, "approximate_greedy", seed=SEED)]
        index = NearestNeighbours(bank)
        per_patch = torch.from_numpy(patch_scores(index, test_features, k=1))
        score_grid = scores_to_grid(unpatch_scores(per_patch, len(test_images)), grid).numpy()
        maps = anomaly_map(score_grid, size=224, sigma=config.sigma)
        table[backbone, weights, ratio] = compute_metrics(test_labels, image_scores(score_grid), test_masks, maps)
        print(f"    ratio {ratio:.0%}: memory bank {bank.shape}")

# %%
print(f"{CATEGORY}, {NUM_TRAIN} training images{'':12s} image AUROC  pixel AUROC   AUPRO")
for (backbone, weights, ratio), m in table.items():
    name = f"{backbone} {weights}, coreset {ratio:.0%}"
    print(f"{name:44s} {m['image_auroc']:8.3f} {m['pixel_auroc']:12.3f} {m['aupro']:8.3f}")

# %%
pretrained, untrained = table["mobilenet_v2", "imagenet", 0.1], table["mobilenet_v2", "random", 0.1]
if EMBEDDED:
    assert pretrained["image_auroc"] > 0.9 and pretrained["aupro"] > 0.8
    assert pretrained["image_auroc"] > untrained["image_auroc"] and pretrained["aupro"] > untrained["aupro"]

# %% [markdown]
# Read the table by rows and by columns:
#
# * **Pretraining matters.** ImageNet features describe textures in a way that puts a scratch or
#   a stain far from plain wood grain. The same mobilenet_v2 with random weights still responds
#   to edges and colour, so it finds the strong defects, but its distances mean less: both image
#   AUROC and AUPRO drop. resnet18 with random weights is a different random function, and is no
#   substitute for pretraining either.
# * **1 % against 10 %** changes little with ImageNet features. The greedy coreset keeps the
#   bank's extent (notebook 03), and the bank is 10× smaller, so the kNN search is 10× faster.
#   The random backbones gain more from the larger bank: their features are less organised, so
#   fewer of them are redundant.
#
# For context, the reference implementation's published MVTec AD means (from its own result
# files) with wide_resnet50_2 at 224 px and a 10 % coreset are:
#
# | image AUROC | pixel AUROC | PRO |
# | --- | --- | --- |
# | 99.16 | 98.11 | 94.37 |
#
# Those are averages over the 15 real MVTec AD categories with a much larger backbone, so they
# are not directly comparable with our three procedurally drawn textures. To run `pcnotes` on the
# real data set, point `PCNOTES_DATA` at it.
#
# ## Where the model fails
#
# Image AUROC hides *which* images are hard. For each category we take the **highest-scored good
# image** (the closest to a false alarm) and the **lowest-scored defective image** (the closest to
# a miss). Each is shown as the image with the true defect outlined, then its map on the
# category's shared colour scale.

# %%
def hardest(evaluation) -> tuple[int, int]:
    """Indices of the highest-scored good image and the lowest-scored defective image."""
    good, defective = np.flatnonzero(evaluation.labels == 0), np.flatnonzero(evaluation.labels == 1)
    return int(good[np.argmax(evaluation.scores[good])]), int(defective[np.argmin(evaluation.scores[defective])])


hard_cases = {}
for category, evaluation in evaluations.items():
    top_good, low_defect = hardest(evaluation)
    hard_cases[category] = top_good, low_defect
    margin = evaluation.scores[low_defect] - evaluation.scores[top_good]
    print(f"{category:7s} top good {evaluation.scores[top_good]:.2f} "
          f"({evaluation.paths[top_good].split('/test/')[1]}), lowest defective "
          f"{evaluation.scores[low_defect]:.2f} ({evaluation.paths[low_defect].split('/test/')[1]}), "
          f"margin {margin:+.2f}")

# %%
fig, axes = plt.subplots(len(evaluations), 4, figsize=(11, 2.9 * len(evaluations)))
for row, (category, evaluation) in enumerate(evaluations.items()):
    split = load_split(root, category, "test", config)
    vmin, vmax = shared_scale(evaluation.maps)  # one colour scale per category
    for column, (i, what) in zip((0, 2), zip(hard_cases[category], ("highest good", "lowest defect"))):
        image = split[i]["image"]
        show_image(axes[row, column], image)
        draw_mask_contour(axes[row, column], evaluation.masks[i])
        axes[row, column].set_title(f"{category}: {what}\n{evaluation.defects[i]}, score {evaluation.scores[i]:.1f}",
                                    fontsize=9)
        overlay_heatmap(axes[row, column + 1], image, evaluation.maps[i], vmin=vmin, vmax=vmax)
        axes[row, column + 1].set_title("anomaly map", fontsize=9)
fig.tight_layout()

# %% [markdown]
# A negative margin means the two classes overlap: some good image outscores some defective one,
# and image AUROC is below 1. What the pictures show:
#
# * **fabric, lowest defect: a stain** that darkens an already dark navy weave. The colour changes
#   a little, and the weave runs on through the stain unchanged. mobilenet_v2's mid-level features
#   describe texture more than colour, so these patches stay close to normal ones in the bank.
#   The map shows only a faint blob, no stronger than the background of good images. This is the
#   one real miss of the default model.
# * **fabric and tiles, highest good: a hot corner.** The brightest spot of both maps sits next to
#   a corner of the image. Features there are computed partly from zero padding, both in the
#   backbone's convolutions and in the 3×3 neighbourhoods. Such patches are a small part of the
#   bank (a handful per image), so an unusual piece of texture in a corner finds fewer close
#   neighbours than the same texture in the middle would.
# * **wood, highest good: a bend in the grain.** The grain lines swerve around a knot-like bump,
#   a shape the training images show rarely. The map is right that it is unusual, but it is
#   normal wood. More training images, or a larger coreset, teach the bank such rare normal
#   patterns.
# * **wood, lowest defect: a thin scratch** of a few pixels' width that runs almost parallel to
#   the grain lines. Each 8×8 patch cell holds only a sliver of it, so its features move little.
#   It is still found, barely above the bend in the good image.
# * **tiles, lowest defect: a stain** that is found without trouble. On the light tiles a dark
#   stain stands out, and the margin is comfortable.
#
# ## Summary
#
# * `evaluate_category` with the default configuration separates good from defective images
#   perfectly on tiles and wood, and nearly so on fabric. Its maps find the defect regions
#   (AUPRO ≥ 0.96 on all three).
# * Image AUROC judges detection. Pixel AUROC judges maps pixel by pixel, and large defects
#   dominate it. AUPRO judges maps region by region up to FPR = 0.3, so small defects count as
#   much as large ones, and it is the strictest of the three.
# * ImageNet pretraining matters where normal texture is irregular (wood); on a regular weave
#   random features also work. The coreset ratio, between 1 % and 10 %, matters far less.
# * The misses are low-contrast defects (a dark stain on dark fabric, a thin scratch along the
#   grain). The false alarms are rare normal texture and patches at the image border.
#
# ## Exercises
#
# 1. **Random coresets.** On the table's `wood` features (`features["mobilenet_v2", "imagenet"]`),
#    compare a random 1 % coreset with the greedy 1 % row of the table. Why does random sampling
#    hurt more at 1 % than at 10 %?
# 2. **Is pretraining always needed?** Evaluate mobilenet_v2 with **random** weights on `fabric`
#    (16 training images, 10 % coreset), and compare it with `evaluations["fabric"]`. What is
#    different about fabric's defects?

# %% [markdown]
# ### Solution 1

# %%
train_features, test_features, grid = features["mobilenet_v2", "imagenet"]  # from the table
for sampler in ("approximate_greedy", "random"):
    bank = train_features[select_coreset(train_features, 0.01, sampler, seed=SEED)]
    per_patch = torch.from_numpy(patch_scores(NearestNeighbours(bank), test_features, k=1))
    score_grid = scores_to_grid(unpatch_scores(per_patch, len(test_images)), grid).numpy()
    m = compute_metrics(test_labels, image_scores(score_grid), test_masks, anomaly_map(score_grid))
    print(f"{sampler:18s} 1%: image AUROC {m['image_auroc']:.3f}, pixel AUROC {m['pixel_auroc']:.3f}, AUPRO {m['aupro']:.3f}")

# %% [markdown]
# A random 1 % (125 patches) misses rare normal patches, such as an unusual knot or a dark
# stretch of grain. Test patches that look like them then score high on good images too: the
# background of the maps rises, and detection drops (here a little; on real data with more
# varied normal images, more). At 10 % a random sample already holds most kinds of patch.
#
# ### Solution 2

# %%
other = categories[0]  # fabric in the embedded set
other_train = load_split(root, other, "train", config)
other_test = load_split(root, other, "test", config)
other_images, other_masks = stack(other_test)
untrained_model = PatchCore(PatchCoreConfig(weights="random", seed=SEED))
untrained_model.fit(torch.stack([other_train[i]["image"] for i in range(NUM_TRAIN)]))
other_scores, other_maps = untrained_model.predict(other_images)
m = compute_metrics(np.asarray(other_test.labels), other_scores, other_masks, other_maps)
print(f"{other}, mobilenet_v2 random, {NUM_TRAIN} images:  image AUROC {m['image_auroc']:.3f}, "
      f"pixel AUROC {m['pixel_auroc']:.3f}, AUPRO {m['aupro']:.3f}")
m = evaluations[other].metrics
print(f"{other}, mobilenet_v2 ImageNet, {m['n_train']} images: image AUROC {m['image_auroc']:.3f}, "
      f"pixel AUROC {m['pixel_auroc']:.3f}, AUPRO {m['aupro']:.3f}")

# %% [markdown]
# On fabric the random network does at least as well as the pretrained one, even with a third of
# the training images. Fabric's defects (a hole,
# a contamination, a loose thread) break a very regular weave with a sharp change of colour and
# contrast, which random 3×3 convolutions already pick up. Wood grain is irregular, so telling
# a scratch from an unusual stretch of normal grain takes features that know what textures look
# like. The lesson: a good score on an easy category says little about the features. Benchmarks
# with many categories, like MVTec AD's 15, exist for that reason.
