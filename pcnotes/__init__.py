"""pcnotes: PatchCore (Roth et al., CVPR 2022), one stage at a time.

Each stage is a module with plain functions, tensors in and tensors out:

=====================  =========================================================
``backbone``           layer hooks on a torchvision backbone
``patches``            ``patchify``: unfold p x p neighbourhoods
``align``              bilinear alignment of deeper layers onto the first grid
``embedding``          mean mappers and the aggregator
``pooled``             the other patch feature: pooled channels, concatenated
``coreset``            random, greedy and approximate greedy coresets
``coreset_fast``       the fast exact greedy loop behind ``coreset`` (same picks)
``coreset_reference``  patchcore-inspection's greedy loop, for comparisons
``scoring``            kNN patch scores (faiss or torch), image scores, eq. 7
``maps``               ``anomaly_map``: upsample and blur
``metrics``            image AUROC, pixel AUROC, AUPRO
``model``              ``PatchCore``: fit, predict, save, load
=====================  =========================================================

Around the pipeline, depending on it and never the other way round:
``data`` (MVTec-layout loader), ``synth`` (the procedural data set),
``evaluation``         (fit + score + metrics for one category), ``viz`` (every plot),
``cli``                (``python -m pcnotes``), ``explorer`` (the coreset-ratio widget) and
``folders``            (the one guarded way to replace an output folder).
``paths``              only says how paths are printed (relative to the repository).
"""

__version__ = "0.1.0"

from pcnotes.folders import use_writable_numba_cache  # noqa: E402  (before anything imports numba)

use_writable_numba_cache()
