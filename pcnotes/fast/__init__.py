"""What makes the stages fast, kept out of the stages themselves.

``coreset``            the fast exact greedy loop behind ``loop="fast"`` (numba + LLVM; same picks)
``coreset_reference``  patchcore-inspection's greedy loop (``loop="reference"``), for comparisons
``explorer``           the explorer's exact incremental paths (prefix nearest neighbours, maps, PRO)

Read :mod:`pcnotes.stages.s5_coreset` for the algorithm; this package only
has to agree with it, and the tests hold it to that.
"""
