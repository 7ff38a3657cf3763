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
# # 00 deeper · What is installed, and no silent fallback to random weights
#
# Continues [00 · Setup](../00_setup.ipynb). For after class, or when something does not run:
# the versions in this Python, and what `load_backbone` does when it cannot load ImageNet weights.
#
# **Learning goals.** After this notebook you can
#
# 1. list the versions of the libraries the course runs on;
# 2. say why random weights are never swapped in silently, and how to ask for them.

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
import platform
from pathlib import Path

import faiss
import matplotlib.pyplot as plt
import numpy as np
import torch
import torchvision

import pcnotes
from pcnotes import (
    display_path,
    ensure_default_dataset,
    list_categories,
    list_defects,
    load_mask,
    load_rgb,
    read_manifest,
)
from pcnotes.stages import MOBILENET_SHA256, MOBILENET_WEIGHTS, load_backbone, sha256sum

torch.manual_seed(0)
plt.rcParams["figure.dpi"] = 80

# %% [markdown]
# ## What is installed
#
# Versions vary, so nbval does not compare them. All runs on the CPU.

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
# ### No silent fallback
#
# When ImageNet weights cannot be loaded, `load_backbone` raises an error naming the file to
# fetch and where to put it. Random weights come only from `weights="random"`, as in notebooks
# 01 and 02 for the paper's shapes. An unknown value fails too:

# %%
# NBVAL_CHECK_OUTPUT
try:
    load_backbone("mobilenet_v2", weights="imagenet1k")
except ValueError as error:
    print("ValueError:", error)

# %% [markdown]
# Random features are not useless: random convolutions are still local texture detectors, and
# on simple procedural textures they can separate defects (notebook 05 compares them with
# ImageNet features on our data). But a silent fallback is another model than the one you asked
# for, and PatchCore's case for real photographs rests on pretrained features.
