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
# # 06 · Coreset explorer: what does a smaller memory bank cost, and what does it save?
#
# **Learning goals.** After this notebook you can
#
# 1. say what the coreset ratio trades: a bank of `M = ratio × N` patches costs `M × D × 4`
#    bytes and `M` distance computations per test patch, but the fewer patches you keep, the
#    farther some normal patches are from every kept one, and those will look anomalous;
# 2. read the **coverage radius** (the largest distance from a training patch to its nearest
#    kept patch) and explain why greedy k-center keeps it smaller than random sampling;
# 3. find, on a real curve, the ratio below which image AUROC, pixel AUROC and AUPRO start
#    to drop, and pick a ratio for a deployment;
# 4. explain the tricks that let the explorer answer while you drag the slider, and still report
#    exactly the numbers a full PatchCore run gives;
# 5. explain why the image AUROC can fall when the bank grows.
#
# Notebook 03 built the samplers; notebook 05 measured one ratio. Here you move the ratio and
# watch everything change at once.

# %%
# %matplotlib inline
import time

import numpy as np
import torch
from IPython.display import clear_output, display

from pcnotes.coreset import approximate_greedy_coreset, select_coreset
from pcnotes.explorer import ExplorerFigure, build_explorer, prepare, stats_rows, update
from pcnotes.metrics import image_auroc
from pcnotes.scoring import NearestNeighbours

torch.manual_seed(0)
rng = np.random.default_rng(0)

# %% [markdown]
# ## 1 · Extract once, explore many times
#
# Everything that does not depend on the ratio is computed once, by `prepare`:
#
# * the patch features of every training image, `(N, D)`: the bank *before* any coreset;
# * the patch features of every test image, `(T·h·w, D)`, with the test masks and labels;
# * the 128-d random projection of the training features that the greedy samplers work in;
# * two **neighbour tables** (section 2).
#
# The backbone (MobileNetV2 with the ImageNet weights shipped in `data/`) is the slow part, and
# it never has to run again while you move the slider. `prepare` extracts the first category
# now; the others are extracted the first time you pick them.

# %%
state = prepare()  # the generated data set in data/synthetic (or $PCNOTES_DATA)
clear_output()  # the extraction progress bars have done their job
data = state.data()
print(f"{data.name}: {data.seconds['extract']:.0f} s to extract, "
      f"{data.seconds['train_table'] + data.seconds['test_table']:.0f} s for the neighbour tables")

# %%
# NBVAL_CHECK_OUTPUT
print("categories:", state.categories, "| loaded:", data.name)
print("training patches  ", data.train_features.shape, f"= {data.num_train_images} images × 28 × 28")
print("test patches      ", data.test_features.shape, f"= {data.num_test} images × 28 × 28")
print("projected training", data.projected.shape)
print("test masks        ", data.masks.shape, "| good/defective:", np.bincount(data.labels).tolist())
assert data.train_features.shape == (data.num_train_images * 28 * 28, 1024)
assert data.test_features.shape == (data.num_test * 28 * 28, 1024)
assert data.projected.shape == (data.num_train_images * 28 * 28, 128)

# %% [markdown]
# ## 2 · Why an update is fast
#
# A full PatchCore evaluation at one ratio picks a coreset (seconds for the greedy samplers),
# then searches the bank for every test patch: `T·h·w × M` distances in 1024 dimensions, and
# that grows with the bank. Three facts make the explorer much faster *without changing any
# number it shows*:
#
# **Greedy k-center is nested.** Each pick depends only on the picks before it, so the coreset
# for 1 % is exactly the first tenth of the coreset for 10 %. The explorer runs a greedy sampler
# once to 10 % (and once more to 100 % the first time you go above 10 %) and slices. Random
# sampling is not nested, but it takes milliseconds.
#
# **A prefix of picks is a look-up.** Right after that first greedy run, the explorer goes once
# through its picks in order and notes, for every test patch, each bank size at which its
# nearest kept patch comes closer. A patch's distance to the first `m` picks is then read off
# those notes, for any `m` up to 10 %.
#
# **Every bank is a subset of the training patches.** For the other banks (random ones, and
# greedy ones above 10 %), `prepare` lists, once, each test patch's `K` nearest training patches
# (`K = 256` by default). For any bank, a patch's nearest bank entry is the first listed
# neighbour that was kept; only the patches with no kept neighbour in their list are searched
# the usual way.
#
# The next cell checks both against a plain faiss search.

# %%
bank = select_coreset(data.train_features, 0.01, "approximate_greedy")
plain, _ = NearestNeighbours(data.train_features[bank]).search(data.test_features, 1)
run = state.greedy_run(data, "approximate_greedy", len(bank))  # the 10 % run, and its notes
from_prefix = run.test.nearest(len(bank))
assert np.allclose(from_prefix, plain[:, 0], rtol=1e-5, atol=1e-3)
print(f"greedy bank of {len(bank)}: the first {len(bank)} of {len(run.order)} picks; "
      f"{run.test.steps / len(from_prefix):.1f} notes per test patch; all distances agree with faiss")

random_bank = select_coreset(data.train_features, 0.01, "random")
plain, _ = NearestNeighbours(data.train_features[random_bank]).search(data.test_features, 1)
from_table = data.test_table.nearest_in(random_bank)
assert np.allclose(from_table, plain[:, 0], rtol=1e-5, atol=1e-3)
print(f"random bank of {len(random_bank)}: {data.test_table.misses:,} of {len(from_table):,} test "
      "patches needed a real search; all distances agree with faiss")

# %% [markdown]
# The anomaly maps of all test images and the two pixel metrics are recomputed for every new
# bank, exactly, over all pixels. What one new ratio costs, measured here:

# %%
seconds = []
for ratio in (0.004, 0.006, 0.008):  # banks not seen yet, all prefixes of the 10 % run
    start = time.perf_counter()
    update(ratio, "approximate_greedy", data.name, cache=state)
    seconds.append(time.perf_counter() - start)
print(f"a new ratio: {np.median(seconds):.2f} s for every number the explorer shows "
      f"(median of {len(seconds)}); drawing the figure comes on top")

# %% [markdown]
# The *scoring time* the explorer reports is still the real one: a plain kNN search of one
# test image against the actual bank, which is what a deployed PatchCore pays per image.

# %% [markdown]
# ## 3 · The explorer
#
# * **coreset ratio**: the fraction of training patches kept, on a log scale from 0.1 % to 100 %;
# * **sampler**: random, approximate greedy (PatchCore's default) or exact greedy;
# * **category** and **test image**: the heat map below shows that image next to its outlined
#   ground truth.
#
# On the left: the bank size (and its memory), the coverage radius (measured in the 128-d random
# projection the greedy samplers work in, so it is exactly what they try to keep small), the
# three metrics on the whole test set, and the two times. On the right: the bank in its first two principal
# components with the kept patches in red; the AUROC curve, which gains a point for every
# setting you try; and the heat map, on one colour scale for the whole test set. It opens on the
# test image with the largest defect. The status next to the sampler says "updating…" while it
# works; the controls stay live, and a change you make meanwhile is applied as soon as the
# running update is done (only the latest one, if you made several).

# %% tags=["remove-output"]
explorer = build_explorer(state, ratio=0.01, sampler="approximate_greedy")
explorer

# %% [markdown]
# ### What to try
#
# 1. **Coverage at 1 %.** Switch between *random* and *approximate greedy* at 0.01. Random keeps
#    the common patches and misses rare ones, so its coverage radius is clearly larger. In the
#    scatter, greedy's red points reach the edges of the cloud; random's crowd its centre.
# 2. **Where the curve flattens.** With *approximate greedy*, step the ratio up from 0.001.
#    The metrics climb over the first steps, then barely move between about 1 % and 10 %, while
#    the bank (and the scoring time) grows tenfold. That is why the paper reports 1 %, 10 % and
#    25 % coresets and not 100 %. Then do the same with *random*: its curve stays lower, and
#    needs far larger banks to come close.
# 3. **Exact vs approximate greedy.** Compare them at the same ratio: nearly the same radius and
#    metrics. The approximate one avoids the exact variant's `N × N` start-up cost.
# 4. **One image.** Keep the defective test image it opens on and go down to 0.001: the
#    background of the heat map gets patchy, because some normal patches now have no kept
#    neighbour nearby and score almost as high as the defect.
#
# ## 4 · A snapshot, for readers without a running kernel
#
# The widget needs a live kernel. The same numbers and the same figure, computed here with the
# plain `update` function, for a few ratios (largest first, so each greedy sampler runs once).
# At 100 % every sampler keeps every patch, so one row stands for all of them:

# %%
ratios = (0.1, 0.03, 0.01, 0.003, 0.001)
rows = []
for sampler in ("random", "approximate_greedy"):
    for ratio in ratios:
        stats = update(ratio, sampler, data.name, cache=state)
        rows.append((sampler, ratio, stats.bank_size, stats.coverage_radius,
                     stats.image_auroc, stats.pixel_auroc, stats.aupro))
full = update(1.0, "random", data.name, cache=state)
rows.append(("(any: the whole bank)", 1.0, full.bank_size, full.coverage_radius,
             full.image_auroc, full.pixel_auroc, full.aupro))
print(f"{'sampler':<22}{'ratio':>7}{'bank':>7}{'radius':>8}{'img AUROC':>11}{'px AUROC':>10}{'AUPRO':>7}")
for sampler, ratio, size, radius, image, pixel, pro in sorted(rows):
    print(f"{sampler:<22}{ratio:>7}{size:>7}{radius:>8.2f}{image:>11.3f}{pixel:>10.3f}{pro:>7.3f}")

# %% [markdown]
# ### Why can a bigger bank detect worse?
#
# With approximate greedy, the image AUROC in the table is higher at 1 % than with the whole bank.
# A bigger bank can only bring every test patch closer to its nearest bank entry, so every image
# score (the largest patch score) falls. The cell below measures by how much, for the good
# images and for each kind of defect, and counts the (defective, good) pairs in the wrong order:
# the image AUROC is the fraction of those pairs in the right order.

# %%
small = update(0.01, "approximate_greedy", data.name, cache=state)
good = data.labels == 0
kinds = np.array(data.defects)
assert small.image_auroc == image_auroc(data.labels, small.image_scores)
print(f"image AUROC: {small.image_auroc:.3f} with 1 % (approximate greedy), "
      f"{full.image_auroc:.3f} with 100 %")
print(f"{'images':<15}{'score at 1 %':>14}{'at 100 %':>10}{'fall':>8}")
for kind in ["good"] + sorted(set(kinds[~good])):
    at_small, at_full = small.image_scores[kinds == kind].mean(), full.image_scores[kinds == kind].mean()
    print(f"{kind:<15}{at_small:>14.2f}{at_full:>10.2f}{(at_small - at_full) / at_small:>8.0%}")


def wrong_pairs(scores):
    """The (defective, good) pairs whose defective image does not score higher."""
    return [(d, g) for d in np.flatnonzero(~good) for g in np.flatnonzero(good) if scores[d] <= scores[g]]


for name, stats in [("1 %", small), ("100 %", full)]:
    pairs = wrong_pairs(stats.image_scores)
    involved = sorted({kinds[d] for d, _ in pairs})
    print(f"{name:>6}: {len(pairs)} of {(~good).sum() * good.sum()} pairs in the wrong order; "
          f"defects in them: {', '.join(involved) or 'none'}")
top = int(np.flatnonzero(good)[np.argmax(full.image_scores[good])])
print(f"highest-scoring good image at 100 %: {data.image_labels[top]}, "
      f"{small.image_scores[top]:.2f} at 1 % and {full.image_scores[top]:.2f} at 100 %")

# %% [markdown]
# The scores do not fall alike. The good image that scores highest owes it to one patch unlike
# every training patch, so no bank brings it down: the 1 % greedy bank is already almost as close
# to it as the whole bank. The stains, soft tints that leave the weave visible, look much like
# normal fabric, and their scores fall faster than the good images' because the whole bank adds
# many more look-alikes of common patches; so more stains end up below good images, and every
# wrong pair above is a stain.

# %%
stats = update(0.01, "approximate_greedy", data.name, cache=state)  # opens on the largest defect
for name, value in stats_rows(stats):
    print(f"{name:>15}: {value}")
figure = ExplorerFigure(dpi=72).draw(stats, state.history(data.name))
display(figure)

# %% [markdown]
# The caches at work: every repeated setting above was a hit.

# %%
state.cache_info()

# %% [markdown]
# ## Summary
#
# * The coreset ratio buys memory and speed (both proportional to the bank size `M`) with
#   coverage: the coverage radius grows as `M` shrinks, and patches far from every kept one
#   turn into false alarms.
# * Greedy k-center keeps the radius small because each pick is the worst-covered patch; random
#   sampling spends its budget where patches are dense.
# * With a greedy coreset the metrics are nearly flat from about 1 % to 10 % and fall below
#   that: a 1 % bank is 100 times smaller and faster to search than the full one, for nearly the
#   same detector. A random subset of the same size is clearly worse.
# * More is not always better: the whole bank also brings the defects that look most normal
#   closer to normal patches, and here its image AUROC is lower than a 1 % greedy bank's.
# * The explorer is fast because the expensive parts are done once (features, neighbour tables,
#   one greedy run per sampler and its prefix notes) and because greedy coresets are nested; its
#   numbers are exactly those of a full run.
#
# ## Exercises
#
# 1. At 1 %, how many times larger is random sampling's coverage radius than approximate
#    greedy's? And at 10 %? Use `update`.
# 2. Check the nesting claim yourself on the first 5,000 training patches: the approximate
#    greedy coreset for 1 % must equal the first picks of the one for 10 %.
#
# ### Solutions

# %%
for ratio in (0.01, 0.1):
    radius = {s: update(ratio, s, data.name, cache=state).coverage_radius
              for s in ("random", "approximate_greedy")}
    print(f"ratio {ratio}: random / greedy radius = {radius['random'] / radius['approximate_greedy']:.2f}")

# %%
# NBVAL_CHECK_OUTPUT
features = data.train_features[:5000]
small = approximate_greedy_coreset(features, 0.01, seed=0)
large = approximate_greedy_coreset(features, 0.1, seed=0)
assert np.array_equal(small, large[: len(small)])
print(f"the {len(small)} picks for 1 % are the first {len(small)} of the {len(large)} picks for 10 %")
