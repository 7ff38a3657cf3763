import contextlib
import os
import signal
import sys

import pytest
import torch

# Started with stdin closed (`<&-`), Python has no sys.__stdin__; pytest's stand-in for sys.stdin then
# fails on `.encoding`, which IPython reads when it is imported (test_explorer stopped at collection).
# /dev/null instead, as after `< /dev/null`.
if sys.__stdin__ is None:
    sys.__stdin__ = open(os.devnull, encoding="utf-8")


@contextlib.contextmanager
def _dispositions(wanted):
    previous = {signum: signal.signal(signum, handler) for signum, handler in wanted.items()}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@pytest.fixture
def signal_dispositions():
    """``with signal_dispositions({signal.SIGHUP: signal.SIG_DFL}):`` sets them for the block, then puts
    back what was there.

    A test of signals sets the disposition it tests: the test run inherits its own (under ``nohup``
    SIGHUP is ignored). A child started inside the block inherits it too (``exec`` keeps SIG_DFL and
    SIG_IGN), so it is set here around ``Popen`` rather than in a ``preexec_fn``, which Python's
    documentation calls unsafe with threads (torch's) about.
    """
    return _dispositions


@pytest.fixture(scope="session")
def wrn50():
    """wide_resnet50_2 with seeded random weights: the shapes are what matter."""
    from pcnotes.stages.s1_features import load_backbone

    model, weights = load_backbone("wide_resnet50_2", "random", seed=0)
    assert weights.kind == "random"
    return model


@pytest.fixture(scope="session")
def two_images():
    generator = torch.Generator().manual_seed(0)
    return torch.randn(2, 3, 224, 224, generator=generator)


@pytest.fixture(scope="session")
def explorer_root(tmp_path_factory):
    """A tiny data set for the explorer: fabric (6 training, 11 test images) and tiles (2 and 5)."""
    import shutil

    from pcnotes.data.synth import generate_dataset

    folder = tmp_path_factory.mktemp("explorer")
    root = generate_dataset(folder / "data", categories=["fabric"], n_train=6, n_test_good=3,
                            n_test_per_defect=2)
    other = generate_dataset(folder / "other", categories=["tiles"], n_train=2, n_test_good=1,
                             n_test_per_defect=1)
    shutil.copytree(other / "tiles", root / "tiles")
    return root
