"""The benchmark scripts run, and write what benchmarks/README.md quotes.

They are timed by hand (``make benchmark``), never in the test suite; here
they only run on tiny stand-in features, so that a change to the library
cannot silently break them.  No timing is asserted.
"""

from __future__ import annotations

import importlib.util
import json
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

    def stand_in(kind, n):  # clustered points instead of MobileNet features of images
        return (centres[rng.integers(0, 20, n)] + rng.normal(size=(n, module.FEATURE_DIM))).astype(np.float32)

    monkeypatch.setattr(module, "load_features", stand_in)
    return module


def test_coreset_benchmark_writes_its_table_to_the_results_file(coreset_benchmark, tmp_path, capsys):
    output = tmp_path / "coreset.json"
    coreset_benchmark.main(["--features", "textures", "grass", "--n", "900", "--greedy-n", "300",
                            "--output", str(output)])  # fmt: skip
    results = json.loads(output.read_text())
    assert [row["features"] for row in results["rows"]] == ["textures", "grass"]
    for row in results["rows"]:
        assert (row["n"], row["m"]) == (900, 90)
        assert set(row["seconds"]) == {"reference", "brute_force", "fast", "fast_one_thread", "lower_bound"}
        assert row["same_indices_as_fast"] == {"one_thread": True, "brute_force": True}
        agreement = row["reference_agreement"]
        assert 0.9 <= agreement["same_position"] <= agreement["same_set"] <= 1.0
        assert agreement["radius_relative_difference"] < 1e-4
        assert row["speed_up_over_reference"]["fast"] == pytest.approx(row["seconds"]["reference"] / row["seconds"]["fast"])
        work = row["fast_work"]
        assert work["flat_steps"] + work["prune_steps"] == 90
        assert 0 < work["exact_distances"] <= work["plain_distances"] == 900 * 90
    assert results["greedy"]["identical"] is True and results["greedy"]["m"] == 30
    out = capsys.readouterr().out
    # the printed table is the markdown that benchmarks/README.md quotes
    assert re.search(r"^\| grass \| 900 \| 90 \| [\d.]+ \| [\d.]+ \([\d.]+x\) \|.* \| yes \|$", out, re.M), out
    assert f"written to {output}" in out


def test_the_committed_results_cover_easy_and_hard_features_with_the_same_indices():
    results = json.loads((BENCHMARKS / "results" / "coreset.json").read_text())
    assert {row["features"] for row in results["rows"]} == {"textures", "embedded", "grass", "gravel", "brick"}
    for row in results["rows"]:
        assert row["same_indices_as_fast"] and all(row["same_indices_as_fast"].values()), row["features"]
