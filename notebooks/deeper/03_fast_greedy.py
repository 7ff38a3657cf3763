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
# # 03 deeper · The fast greedy loop: no N×N matrix, skipped distances, the same indices
#
# Continues [03 · Coreset](../03_coreset.ipynb), after the greedy k-center exercise. Reading for
# after class.
#
# **Learning goals.** After this notebook you can
#
# 1. explain why the reference's exact sampler runs out of memory, and how `pcnotes` gets the same
#    start without the N×N matrix;
# 2. explain why skipping distance computations with the triangle inequality and partial sums
#    gives *exactly* the indices of the loop that computes every distance;
# 3. read `benchmarks/results/coreset.json`, including the hard case where little can be skipped.
#
# The paper's algorithm is `pcnotes/stages/s5_coreset.py`, the loop of the exercise. The fast loop lives in
# its own module, `pcnotes/fast/coreset.py`; nothing in it is needed to understand PatchCore.

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
import json
import time

import numpy as np
import torch
from IPython.display import Markdown, display
from scipy.spatial.distance import cdist

from pcnotes import (
    PatchCore,
    PatchCoreConfig,
    ensure_default_dataset,
    list_categories,
    load_split,
    results_dir,
)
from pcnotes.fast import coreset as coreset_fast
from pcnotes.stages import s5_coreset as coreset

SEED = 0
torch.manual_seed(SEED)
rng = np.random.default_rng(SEED)

# %% [markdown]
# The same bank as in notebook 03: 16 training images of the first category, default model.

# %%
# NBVAL_CHECK_OUTPUT
root = ensure_default_dataset(seed=SEED)
config = PatchCoreConfig()
train = load_split(root, list_categories(root)[0], "train", config)
images = torch.stack([train[i]["image"] for i in range(min(16, len(train)))])
features, grid = PatchCore(config).extract(images)
assert features.shape == (len(images) * 784, 128)
print("patch features:", features.shape, features.dtype)

# %% [markdown]
# ## The start without the N×N matrix
#
# The reference's exact sampler (`GreedyCoresetSampler` in
# [patchcore-inspection](https://github.com/amazon-science/patchcore-inspection)) computes the
# whole N×N distance matrix, only to take the norm of each row as the starting distance. In
# float32 that is 4·N² bytes. One user with 209 training images hit this:

# %%
# NBVAL_CHECK_OUTPUT
BLOCK = 4 * 2**22  # pcnotes' largest block of pairwise distances, in bytes
for images_ in (60, 209):
    n = images_ * 784
    print(f"{images_:3d} images, N = {n:6d}: reference N x N matrix {4 * n * n / 1e9:6.1f} GB, "
          f"pcnotes: projected bank + one block {(4 * n * 128 + BLOCK) / 1e6:4.0f} MB")

# %% [markdown]
# A row's norm is a sum over the row, so it can be added up one block of rows at a time and the
# matrix never exists: `greedy_coreset` streams blocks of at most 2²² distances. The time stays
# O(N²·d), but the memory is the bank plus one block. On 2000 points we can afford the matrix and
# check that the first pick is the same:

# %%
# NBVAL_CHECK_OUTPUT
few = features[rng.choice(len(features), 2000, replace=False)]
most_remote = int(np.argmax(np.linalg.norm(cdist(few, few), axis=1)))
first_pick = int(coreset.greedy_coreset(few, 0.01, projection_dim=None)[0])
assert first_pick == most_remote
print("first pick from streamed row norms == argmax of the full matrix's row norms:", first_pick == most_remote)

# %% [markdown]
# ## One arithmetic for every loop
#
# A loop that skips work can only promise the *same indices* if every distance it does compute is
# bit for bit the one the full loop computes. So every loop in `coreset_fast` follows one contract:
# keys are float32 **squared** distances (`sqrt` is monotone, so the argmax is the same), summed in
# a fixed order over 8 interleaved lanes (`lane_squared_distances`), and ties go to the lowest
# index. `lane_loop` is that contract as a ten-line numpy loop; it computes N distances per step.
#
# Before the loop, the points are centred and rotated into their principal axes
# (`rotate_to_principal_axes`). A rotation changes no distance, but the first coordinates now
# carry most of every distance, which the partial sums below use:

# %%
points = torch.from_numpy(features)
rotated = coreset_fast.rotate_to_principal_axes(points)
pairs = rng.choice(len(features), size=(2000, 2))
for name, space in (("original axes", points.numpy()), ("principal axes", rotated.numpy())):
    squares = (space[pairs[:, 0]] - space[pairs[:, 1]]) ** 2
    share = [squares[:, :k].sum(1).mean() / squares.sum(1).mean() for k in (16, 32)]
    print(f"{name:15s}: first 16 coordinates carry {share[0]:.0%} of the squared distance, first 32 {share[1]:.0%}")
d_before = np.linalg.norm(points.numpy()[pairs[:, 0]] - points.numpy()[pairs[:, 1]], axis=1)
d_after = np.linalg.norm(rotated.numpy()[pairs[:, 0]] - rotated.numpy()[pairs[:, 1]], axis=1)
print(f"largest relative change of a distance: {np.max(np.abs(d_after - d_before) / d_before):.1e}")

# %% [markdown]
# ## Skipping with the triangle inequality
#
# Let x be a point whose nearest centre so far is s, at distance m(x) = d(x, s). A new centre c can
# lower x's distance only if d(c, x) < m(x). The triangle inequality gives
#
# $$d(c, x) \;\ge\; d(c, s) - d(x, s) \;=\; d(c, s) - m(x),$$
#
# so if d(c, s) ≥ 2·m(x), then d(c, x) ≥ m(x): x keeps its distance, and d(c, x) need not be
# computed.
#
# **Whole clusters and tails.** The *pruning walk* groups the points by the centre that last
# lowered their distance, each group sorted by m(x), largest first. When the test holds for the
# first point it holds for the whole group, so one centre-to-centre distance skips the group.
# Otherwise the walk stops as soon as it holds: every later point has a smaller m(x).
#
# **Partial sums.** For the points that are visited, the loop first adds up the squares of the
# first 16, then 32 coordinates. A sum of non-negative terms only grows, and so does its float32
# rounding, so if a partial sum already reaches m(x)², the full distance cannot be smaller.
#
# **Why it stays exact.** A skipped point is one whose key would not have changed. A computed one
# uses the contract's arithmetic. A small safety factor on the 2·m(x) test absorbs float32 rounding
# of the bound (the proof is in `pcnotes/fast/coreset.py`).
#
# **Three ways to run a step.** The walk is one. A *flat pass* visits every point, like the plain
# loop, but tests the first 64 coordinates before the rest, from a dense copy it streams through
# memory. *flat32* tests the first 32 first, from a copy half as large, and reads the first 64 only
# for the points that test did not skip; those reads are scattered, so it wins only once nearly
# every point is skipped. The loop measures, as it runs, which of the three is fastest per step,
# tries the others now and then, and switches. The choice changes the speed, never an index.
#
# The check: the same start as `approximate_greedy_coreset` (mean distance to 10 random points),
# then every way against `lane_loop`.

# %%
# NBVAL_CHECK_OUTPUT
M = coreset.coreset_size(len(features), 0.1)
anchors = np.random.default_rng(SEED).choice(len(points), 10, replace=False)
start = torch.cdist(points, points[anchors], compute_mode="donot_use_mm_for_euclid_dist").mean(dim=1, dtype=torch.float64)
coreset_fast.select(points[:500], start[:500], 50)  # compile (or load) the numba kernels first
seconds = {}
began = time.perf_counter()
plain = coreset_fast.select(points, start, M, loop="lane")
seconds["lane_loop"] = time.perf_counter() - began
for way in ("flat", "flat32", "prune", "auto"):
    began = time.perf_counter()
    fast = coreset_fast.select(points, start, M, way=way)
    seconds[way] = time.perf_counter() - began
    assert np.array_equal(fast, plain), way
    print(f"way {way!r:8s}: same {M} indices as lane_loop: True")
library = coreset.approximate_greedy_coreset(features, 0.1, seed=SEED)
assert np.array_equal(library, plain)
print("approximate_greedy_coreset (default, fast) gives the same indices:", np.array_equal(library, plain))

# %% [markdown]
# How much of the work was skipped on these features (the loop's own counters):

# %%
stats: dict = {}
coreset_fast.select(points, start, M, stats=stats)
print(f"distances computed in full: {stats['exact_distances']:,} of N x M = {stats['plain_distances']:,} "
      f"({stats['exact_distances'] / stats['plain_distances']:.1%})")
flat64 = stats["flat_steps"] - stats["flat32_steps"]
print(f"steps: {flat64} flat, {stats['flat32_steps']} flat32, {stats['prune_steps']} pruning walk, "
      f"{stats['switches']} switches")

# %% [markdown]
# ### A live timing
#
# The check above timed each loop once. These are the times of this run of this notebook, on
# whatever computer ran it: they change from run to run, and nbval does not check them. The full
# comparison, against the reference's own loop and on harder features, is the benchmark below.

# %%
print(f"this run, N = {len(points)}, M = {M}, seconds against lane_loop (numpy, every distance):")
for name, value in seconds.items():
    print(f"  {name:9s} {value:6.2f} s  ({seconds['lane_loop'] / value:.1f}x)")

# %% [markdown]
# ## The benchmark
#
# `benchmarks/coreset.py` (`make benchmark`) times, side by side in one process, the same
# `approximate_greedy_coreset` selection made by the reference's loop, by the flat pass computing
# every distance ("brute force"), by the fast loop on all threads and on one, and by the fast loop
# as it was before the photographs were added to the benchmark ("old fast", commit `fb87a8c`:
# the pruning walk alone, on one thread or two). It adds a
# **lower bound**: M argmaxes over N keys, which any greedy loop must do. It runs on the embedded
# set's features and on crops of real texture photographs that ship with scikit-image. It writes
# `benchmarks/results/coreset.json` and, beside it, its report `coreset.md`, which this cell shows;
# the prose quotes no number of its own.

# %%
RESULTS = results_dir() / "coreset.json"
results = json.loads(RESULTS.read_text()) if RESULTS.exists() else None
if results is None:
    print("benchmarks/results/coreset.json is missing: run `make benchmark` from the repository root.")
else:
    display(Markdown(RESULTS.with_suffix(".md").read_text()))  # the report the benchmark wrote beside it
    for row in results["rows"]:
        assert all(row["same_indices_as_fast"].values()), row["features"]
    print("every loop but the reference selects the same indices on every row: True")

# %% [markdown]
# Read the last column of the second table first: the share of the N·M distances that the fast
# loop computed in full. On the embedded set's features almost everything is skipped. The
# photographs with a high intrinsic dimension (grass, gravel) are the hard case: their patches do
# not form tight clusters, the triangle test and the partial sums succeed less often, and a large
# share of the distances must be computed. The lower bound shows how far each loop is from the one step no
# loop can avoid, and the second table what choosing as it goes costs against forcing, for the
# whole run, the way that turned out best. The hardest row of the file:

# %%
if results is not None:
    hardest = max(results["rows"], key=lambda r: r["fast_work"]["exact_distances"] / r["fast_work"]["plain_distances"])
    times = hardest["seconds"]
    print(f"hardest: {hardest['features']} ({hardest['description']})")
    print(f"  fast {times['fast']:.2f} s, lower bound {times['lower_bound']:.3f} s: "
          f"{times['fast'] / times['lower_bound']:.0f}x the lower bound")
    if "reference" in times:
        print(f"  reference {times['reference']:.2f} s: fast is {times['reference'] / times['fast']:.1f}x faster")
    if "greedy" in results:
        greedy = results["greedy"]
        print(f"greedy_coreset (exact start), {greedy['features']}, N = {greedy['n']}: plain {greedy['seconds']['plain']:.2f} s, "
              f"fast {greedy['seconds']['fast']:.2f} s, identical: {greedy['identical']}")

# %% [markdown]
# ## Summary
#
# * The reference materialises the N×N distance matrix for one norm per row; streaming the rows in
#   blocks gives the same start in the memory of the bank plus one block.
# * Every loop sums float32 squared distances in one fixed order, so a loop that skips work can
#   return exactly the same indices.
# * The triangle inequality skips whole clusters and their tails; partial sums in the principal
#   axes skip most of the rest.
# * How much is skipped depends on the features: the benchmark's results file shows both the easy
#   and the hard case, and the lower bound.
#
# Back to [03 · Coreset](../03_coreset.ipynb), or on to
# [04 · Scoring and heat maps](../04_scoring_and_heatmaps.ipynb).
