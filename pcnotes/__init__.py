"""pcnotes: PatchCore (Roth et al., CVPR 2022), one stage at a time.

The package, in the order a newcomer reads it::

    stages/   the pipeline, one module per stage, numbered as the notebooks number them
              s1_features -> s2_patches -> s3_align -> s4_mean_mapped | s4_pooled_concat
              -> s5_coreset -> s6_scoring -> s7_maps -> s8_metrics
    model.py  PatchCore: the stages composed (fit, predict, save, load)
    config.py PatchCoreConfig: what a model computes, saved with it, and its checking
    data/     the MVTec AD folder layout, the procedural data set, the shipped weights
    app/      the command line (python -m pcnotes), evaluation, plots, the explorer widget
    course/   the exercise checkers, one module per notebook
    fast/     what makes stages fast (numba kernels), held equal to the stages by tests
    util/     output folders written safely, paths printed readably

The arrows only point down this list's dependencies: stages import nothing
of pcnotes but ``util``; ``model`` and ``config`` import stages; ``data``,
``app`` and ``course`` sit around them.

The public face below is imported on first use (PEP 562 ``__getattr__``),
so ``import pcnotes`` loads neither torch nor numba, faiss or matplotlib, and
``python -m pcnotes --help`` answers at once::

    from pcnotes import PatchCore, PatchCoreConfig, ensure_default_dataset, load_split
"""

import importlib

__version__ = "0.1.0"

#: name -> the module that defines it
_PUBLIC = {
    "PatchCore": "pcnotes.model",
    "Prediction": "pcnotes.model",
    "PatchCoreConfig": "pcnotes.config",
    "DEFAULT_PATCH_FEATURE": "pcnotes.config",
    "ConfigError": "pcnotes.config",
    "DataError": "pcnotes.data.mvtec",
    "MVTecDataset": "pcnotes.data.mvtec",
    "list_categories": "pcnotes.data.mvtec",
    "list_defects": "pcnotes.data.mvtec",
    "load_rgb": "pcnotes.data.mvtec",
    "load_mask": "pcnotes.data.mvtec",
    "load_images": "pcnotes.data.mvtec",
    "load_split": "pcnotes.data.mvtec",
    "stack": "pcnotes.data.mvtec",
    "image_transform": "pcnotes.data.mvtec",
    "mask_transform": "pcnotes.data.mvtec",
    "unnormalize": "pcnotes.data.mvtec",
    "ensure_default_dataset": "pcnotes.data.synth",
    "read_manifest": "pcnotes.data.synth",
    "evaluate_category": "pcnotes.app.evaluation",
    "display_path": "pcnotes.util.paths",
    "results_dir": "pcnotes.util.paths",
    "results_file": "pcnotes.util.paths",
}
_SUBPACKAGES = ("stages", "data", "app", "course", "fast", "util")
#: Old names kept for one release: learner editions written before the layout changed
#: do ``from pcnotes import exercises``.
_RENAMED = {"exercises": "pcnotes.course"}

__all__ = [*_PUBLIC, *_SUBPACKAGES, "__version__"]


def __getattr__(name: str):
    if name in _PUBLIC:
        value = getattr(importlib.import_module(_PUBLIC[name]), name)
    elif name in _SUBPACKAGES:
        value = importlib.import_module(f"pcnotes.{name}")
    elif name in _RENAMED:
        value = importlib.import_module(_RENAMED[name])
    else:
        raise AttributeError(f"module 'pcnotes' has no attribute {name!r}")
    globals()[name] = value  # the next lookup is a plain attribute
    return value


def __dir__():
    return sorted(__all__)
