"""The course's exercise checkers: the learner writes a stage, pcnotes checks it.

    >>> from pcnotes import course
    >>> course.check_patchify(my_patchify)          # doctest: +SKIP
    ✓ patchify: correct on all 5 inputs (...).

One module per notebook holds its checkers (``nb02_patches``, ``nb03_coreset``,
``nb04_scoring``, ``nb05_evaluation``); :mod:`pcnotes.course.checking` holds
what they share; :mod:`pcnotes.course.adoption` keeps the learner's passing
functions for the notebooks that follow and for the capstone. A checker's reference answer is always the library's own
stage, e.g. :func:`pcnotes.stages.greedy_k_center` for "greedy k-center".
"""

from __future__ import annotations

from typing import Callable

from pcnotes.course.adoption import adopt, course_dir, learner_stages, library_stage
from pcnotes.course.checking import STUB_PHRASE
from pcnotes.course.nb02_patches import check_aggregator, check_align, check_mean_mapper, check_patchify
from pcnotes.course.nb03_coreset import check_coreset_size, check_greedy_k_center
from pcnotes.course.nb04_scoring import check_image_score, check_reweighting
from pcnotes.course.nb05_evaluation import check_auroc, check_pro

__all__ = [
    "CHECKERS", "STUB_PHRASE", "check_patchify", "check_align", "check_mean_mapper", "check_aggregator",
    "check_coreset_size", "check_greedy_k_center", "check_image_score", "check_reweighting", "check_auroc",
    "check_pro", "adopt", "learner_stages", "course_dir", "library_stage",
]  # fmt: skip

#: exercise name -> (checker, the core notebook it belongs to)
CHECKERS: dict[str, tuple[Callable[[Callable], bool], str]] = {
    "patchify": (check_patchify, "02_locally_aware_patches"),
    "align": (check_align, "02_locally_aware_patches"),
    "mean mapper": (check_mean_mapper, "02_locally_aware_patches"),
    "aggregator": (check_aggregator, "02_locally_aware_patches"),
    "coreset size": (check_coreset_size, "03_coreset"),
    "greedy k-center": (check_greedy_k_center, "03_coreset"),
    "image score": (check_image_score, "04_scoring_and_heatmaps"),
    "eq. 7 re-weighting": (check_reweighting, "04_scoring_and_heatmaps"),
    "AUROC": (check_auroc, "05_evaluation"),
    "PRO": (check_pro, "05_evaluation"),
}
