"""The stages of PatchCore, in pipeline order, numbered as the notebooks number them.

=====  ======================  ===================================================  ========
stage  module                  what it computes                                     notebook
=====  ======================  ===================================================  ========
1      ``s1_features``         feature maps from layer hooks on a backbone          01
2      ``s2_patches``          ``patchify``: every p x p neighbourhood              02
3      ``s3_align``            deeper layers' patches on the first layer's grid     02
4      ``s4_mean_mapped``      the patch feature: mean mappers + aggregator         02
4      ``s4_pooled_concat``    the other patch feature: pooled channels, concat     02
5      ``s5_coreset``          the memory bank: greedy k-center coresets            03
6      ``s6_scoring``          kNN patch scores, the image score (eq. 6, eq. 7)     04
7      ``s7_maps``             heat maps: upsample and blur                         04
8      ``s8_metrics``          image AUROC, pixel AUROC, AUPRO                      05
=====  ======================  ===================================================  ========

Each module is plain functions, tensors or arrays in and out, with the shapes
in every docstring. What makes a stage fast lives in :mod:`pcnotes.fast`,
never here. ``from pcnotes.stages import patchify, greedy_k_center, ...``
gives every stage's public names.
"""

from pcnotes.stages.s1_features import (
    DEFAULT_LAYERS,
    MOBILENET_SHA256,
    MOBILENET_WEIGHTS,
    FeatureExtractor,
    load_backbone,
    sha256sum,
)
from pcnotes.stages.s2_patches import patchify
from pcnotes.stages.s3_align import align_patches
from pcnotes.stages.s4_mean_mapped import aggregate, embed, mean_map
from pcnotes.stages.s4_pooled_concat import pool_neighbourhood, pooled_concat, resize_to_grid
from pcnotes.stages.s5_coreset import (
    SAMPLERS,
    approximate_greedy_coreset,
    coreset_size,
    coverage_radius,
    greedy_coreset,
    greedy_k_center,
    random_coreset,
    select_coreset,
)
from pcnotes.stages.s6_scoring import (
    NearestNeighbours,
    image_scores,
    patch_scores,
    reweighted_image_scores,
    score_grid,
    scores_to_grid,
    unpatch_scores,
)
from pcnotes.stages.s7_maps import anomaly_map, normalize_maps, upsample_scores
from pcnotes.stages.s8_metrics import (
    aupro,
    compute_metrics,
    image_auroc,
    label_regions,
    pixel_auroc,
    pro_curve,
    roc_curve_points,
)

__all__ = [
    "DEFAULT_LAYERS", "FeatureExtractor", "load_backbone", "MOBILENET_WEIGHTS", "MOBILENET_SHA256", "sha256sum",
    "patchify",
    "align_patches",
    "mean_map", "aggregate", "embed",
    "pool_neighbourhood", "resize_to_grid", "pooled_concat",
    "SAMPLERS", "greedy_k_center", "coreset_size", "random_coreset", "greedy_coreset",
    "approximate_greedy_coreset", "select_coreset", "coverage_radius",
    "NearestNeighbours", "patch_scores", "unpatch_scores", "scores_to_grid", "score_grid",
    "image_scores", "reweighted_image_scores",
    "upsample_scores", "anomaly_map", "normalize_maps",
    "image_auroc", "pixel_auroc", "roc_curve_points", "label_regions", "pro_curve", "aupro",
    "compute_metrics",
]  # fmt: skip
