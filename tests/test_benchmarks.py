"""The benchmark scripts run, and print what benchmarks/README.md quotes.

They are timed by hand (``make benchmark``), never in the test suite; here
they only run on tiny stand-in features, so that a change to the library
cannot silently break them.  No timing is asserted.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import numpy as np
import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture
def coreset_benchmark(monkeypatch):
    spec = importlib.util.spec_from_file_location("coreset_benchmark", BENCHMARKS / "coreset.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 3, size=(20, module.FEATURE_DIM))
    monkeypatch.setattr(  # clustered stand-ins instead of MobileNet features of rendered textures
        module, "load_features",
        lambda n, seed=0: (centres[rng.integers(0, 20, n)] + rng.normal(size=(n, module.FEATURE_DIM))).astype(np.float32),
    )  # fmt: skip
    return module


def test_coreset_benchmark_prints_both_loops_and_their_agreement(coreset_benchmark, capsys):
    coreset_benchmark.benchmark_approximate([600, 900], 0.1, skip_reference_above=700)
    out = capsys.readouterr().out
    number = r"([\d.]+)"
    row_600 = re.search(
        rf"^\s*600\s+60\s+{number}\s+{number}\s+{number}x\s+{number}\s+{number}x\s+{number} %\s+{number} %"
        rf"\s+(\d+|none)\s+{number}\s+{number}\s+(\S+)\s+{number} %$",
        out,
        re.M,
    )
    assert row_600, out
    same_position, same_set = float(row_600.group(6)), float(row_600.group(7))
    assert 90.0 <= same_position <= same_set <= 100.0
    assert (row_600.group(8) == "none") == (same_position == 100.0)
    assert float(row_600.group(11)) < 1e-4  # the two coverage radii agree
    assert re.search(r"^\s*900\s+90\s+skipped\s+[\d.]+\s+-", out, re.M), out
    assert "N=900: reference loop skipped" in out
    assert re.search(r"N=600: the fast loop walked [\d.]+% of the N \* M rows", out)


def test_greedy_benchmark_finds_fast_and_plain_identical(coreset_benchmark, capsys):
    coreset_benchmark.benchmark_greedy(500, 0.1)
    out = capsys.readouterr().out
    assert re.search(r"^\s*500\s+50\s+[\d.]+\s+[\d.]+\s+[\d.]+x\s+True$", out, re.M), out
