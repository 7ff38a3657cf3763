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
# # 06 deeper · How the explorer keeps up: nested coresets, look-up tables and caches
#
# Continues [06 · Coreset explorer](../06_coreset_explorer.ipynb), after *The explorer*. Reading
# for after class.
#
# **Learning goals.** After this notebook you can
#
# 1. say which parts of a PatchCore evaluation depend on the coreset ratio, and which are done once;
# 2. explain why a greedy coreset of any size up to 10 % is a look-up, with no search;
# 3. explain why a neighbour table answers for *any* bank exactly, whatever its `K`;
# 4. read the explorer's caches with `cache_info()`.
#
# The code is `pcnotes/app/explorer_state.py` (data, caches, `update`) and `pcnotes/fast/explorer.py`
# (the exact fast paths, each tested against the plain library function).

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
import time

import numpy as np
import torch

from pcnotes import PatchCoreConfig
from pcnotes.app.explorer import prepare, update
from pcnotes.stages import NearestNeighbours, select_coreset

torch.manual_seed(0)

# %% [markdown]
# ## What is done once
#
# A full evaluation at one ratio picks a coreset, then searches the bank for every test patch
# (`T·h·w × M` distances in `D` dimensions) and computes the maps and metrics. `prepare` does
# the part that does not depend on the ratio, once per category:
#
# * the patch features of every training image `(N, D)` and every test image `(T·h·w, D)`;
# * a **neighbour table**: each test patch's `K` nearest training patches;
# * the test image to open on: the defect that stands out most from its background on the whole
#   bank's maps.
#
# The coverage radius is not tabled: each bank's radius is one search of the training patches
# outside it, in the `D` dimensions the scores live in, so that the heat map's scale and the
# radius agree.
#
# The same settings as the core notebook:

# %%
start = time.perf_counter()
state = prepare(config=PatchCoreConfig(patch_feature="mean_mapped"), neighbours=64)
data = state.data()
print(f"{data.name}: " + ", ".join(f"{step} {seconds:.1f} s" for step, seconds in data.seconds.items()))

# %%
# NBVAL_CHECK_OUTPUT
print("training patches", data.train_features.shape)
print("test patches    ", data.test_features.shape)
print("neighbour table, K =", data.test_table.k, ":", data.test_table.indices.shape)
assert data.test_table.indices.shape == (len(data.test_features), state.neighbours)

# %% [markdown]
# ## Fact 1: greedy k-center is nested
#
# Each greedy pick depends only on the picks before it, so the coreset for 1 % is exactly the
# first tenth of the coreset for 10 % (the core notebook's exercise checks it). The explorer runs
# a greedy sampler once to 10 %, and once more to 100 % the first time you go above 10 %, then
# slices. Random sampling is not nested, but it takes milliseconds.
#
# ## Fact 2: a prefix of picks is a look-up
#
# Right after that first greedy run, the explorer goes once through its picks in order and
# notes, for every test patch, each bank size at which its nearest kept patch comes closer.
# A patch's distance to the first `m` picks is then read off those notes, for any `m` up to
# 10 %. The cell compares it with a plain faiss search of a 1 % greedy bank chosen afresh:

# %%
bank = select_coreset(data.train_features, 0.01, "approximate_greedy")
plain, _ = NearestNeighbours(data.train_features[bank]).search(data.test_features, 1)
run = state.greedy_run(data, "approximate_greedy", len(bank))  # the 10 % run, and its notes
from_prefix = run.test.nearest(len(bank))
assert np.array_equal(run.order[: len(bank)], bank)
assert np.allclose(from_prefix, plain[:, 0], rtol=1e-5, atol=1e-3)
print(f"greedy bank of {len(bank)}: the first {len(bank)} of the run's {len(run.order)} picks; "
      f"{run.test.steps / len(from_prefix):.1f} notes per test patch; every distance agrees with faiss")

# %% [markdown]
# ## Fact 3: every bank is a subset of the training patches
#
# For the other banks (random ones, and greedy ones above 10 %), the test table answers. It
# lists each test patch's `K` nearest training patches, nearest first. If one of them was kept,
# the first kept one is the patch's nearest bank entry: every unlisted training patch is at
# least as far as the last listed one. Only patches with no kept neighbour in their list are
# searched the usual way, through the bank alone. So the answer is exact for every `K`; a
# smaller `K` only sends more patches to that search, and the notebooks use `K = 64` because
# building the table is much of `prepare`'s time. How many patches are searched, per bank:

# %%
for ratio in (0.001, 0.01, 0.1):
    random_bank = select_coreset(data.train_features, ratio, "random")
    plain, _ = NearestNeighbours(data.train_features[random_bank]).search(data.test_features, 1)
    from_table = data.test_table.nearest_in(random_bank)
    assert np.allclose(from_table, plain[:, 0], rtol=1e-5, atol=1e-3)
    print(f"random bank of {len(random_bank):>6,}: {data.test_table.misses:>6,} of {len(from_table):,} "
          "test patches searched; every distance agrees with faiss")

# %% [markdown]
# The searched patches are many for small banks, where the search is cheap, and few for large
# ones, where it would be dear. The maps of all test images and the pixel metrics are then
# computed exactly, over all pixels, for every new bank.
#
# ## What a new ratio costs
#
# The numbers alone, for banks not seen yet (greedy prefixes of the 10 % run, and random banks):

# %%
for sampler in ("approximate_greedy", "random"):
    seconds = []
    for ratio in (0.004, 0.006, 0.008):
        start = time.perf_counter()
        update(ratio, sampler, cache=state)
        seconds.append(time.perf_counter() - start)
    print(f"{sampler}: {np.median(seconds):.2f} s per new ratio (median of {len(seconds)})")

# %% [markdown]
# The *scoring time* the explorer shows is still the real one: a plain kNN search of one test
# image against the actual bank, what a deployed PatchCore pays per image.
#
# ## The caches
#
# Coresets and scores are cached per (category, sampler, bank size): two ratios that give the
# same bank size give the same bank, and the AUROC curve is read from the score cache. Asking
# for the settings above again is all hits, and runs no sampler:

# %%
before = state.cache_info()
for sampler in ("approximate_greedy", "random"):
    for ratio in (0.004, 0.006, 0.008):
        update(ratio, sampler, cache=state)
after = state.cache_info()
print({key: after[key] - before[key] for key in after})
assert after["sampler_runs"] == before["sampler_runs"] and after["score_misses"] == before["score_misses"]
after

# %% [markdown]
# ## Summary
#
# * The features and a neighbour table are computed once per category; a new ratio only
#   changes the bank.
# * Greedy coresets are nested: one run to 10 % answers every smaller ratio, by look-up.
# * A neighbour table gives the nearest bank entry of any subset exactly; its `K` sets only how
#   many patches still need a search.
# * Settings seen before come from the caches.
#
# Back to [06 · Coreset explorer](../06_coreset_explorer.ipynb).
