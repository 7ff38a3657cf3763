"""The learner's seams: ``PatchCore(config, stages={...})``, ``fit_features`` / ``score_features``,
``metrics``, and ``course.adopt`` / ``course.learner_stages`` that feed them."""

import functools
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from scipy.spatial.distance import cdist

from pcnotes import course
from pcnotes.config import ConfigError, PatchCoreConfig
from pcnotes.model import STAGES, PatchCore

# mobilenet_v2 with random weights on 48x48 inputs: a 6x6 grid at stride 8 and 3x3 at stride 16,
# so that align has something to resize; small dims keep the mean mapper cheap.
# The random sampler (seeded) keeps the fits cheap; greedy_k_center's test runs the exact greedy.
SMALL = dict(backbone="mobilenet_v2", weights="random", resize=48, crop=48, pretrain_dim=48, target_dim=32,
             coreset_ratio=0.25, sampler="random", seed=0)


def images(n: int, seed: int, defect: bool = False) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    batch = F.avg_pool2d(torch.randn(n, 3, 56, 56, generator=generator), 9, 1) * 4
    if defect:
        batch[:, :, 16:28, 20:32] += 6.0
    return batch


TRAIN, TEST = images(2, seed=0), torch.cat([images(2, seed=1), images(2, seed=2, defect=True)])
LABELS = np.array([0, 0, 1, 1])

#: a config that runs each stage
RUNS_IT = {
    "patchify": dict(patch_feature="mean_mapped"),
    "align": dict(patch_feature="mean_mapped"),
    "mean_mapper": dict(patch_feature="mean_mapped"),
    "aggregator": dict(patch_feature="mean_mapped"),
    "coreset_size": dict(),
    "greedy_k_center": dict(sampler="greedy"),
    "image_score": dict(),
    "reweighted_score": dict(reweight=2),
    "auroc": dict(),
}


def run(overrides: dict, stages: dict | None = None):
    """Fit on TRAIN, predict TEST: ``-> (model, prediction, image AUROC by the auroc stage)``."""
    model = PatchCore(PatchCoreConfig(**{**SMALL, **overrides}), stages=stages).fit(TRAIN)
    prediction = model.predict(TEST)
    return model, prediction, model.stages["auroc"](LABELS, prediction.scores)


@functools.cache
def library_run(name: str):
    """The library's model under the config that runs stage ``name``, fitted once for every test."""
    return run(RUNS_IT[name])


def test_every_stage_has_a_config_that_runs_it():
    assert set(RUNS_IT) == set(STAGES)


@pytest.mark.parametrize("name", sorted(RUNS_IT))
def test_the_librarys_own_function_as_a_stage_gives_the_librarys_result(name):
    """Through the stage's seam (e.g. patchify -> align -> mean mapper -> aggregator one by one,
    greedy_k_center on the 128-d projection) the library's functions give the library's model."""
    library, library_prediction, library_auroc = library_run(name)
    model, prediction, auroc = run(RUNS_IT[name], {name: STAGES[name]})
    assert model.replaced == [name]
    np.testing.assert_allclose(model.memory_bank, library.memory_bank, atol=1e-5)
    np.testing.assert_allclose(prediction.scores, library_prediction.scores, rtol=1e-4)
    np.testing.assert_allclose(prediction.maps, library_prediction.maps, rtol=1e-4, atol=1e-6)
    assert auroc == pytest.approx(library_auroc)


def test_pooled_concat_through_the_stages_equals_the_pooled_feature():
    """A pooled_concat model with a stage replaced runs patchify, align and the mean mapper per layer."""
    library = PatchCore(PatchCoreConfig(**SMALL))
    staged = PatchCore(PatchCoreConfig(**SMALL), stages={"patchify": STAGES["patchify"]})
    assert library.config.patch_feature == "pooled_concat"
    (ours, grid), (theirs, their_grid) = staged.embed(TEST), library.embed(TEST)
    assert grid == their_grid == (6, 6) and ours.shape == theirs.shape == (len(TEST) * 36, 32 + 96)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-4)


# -- wrong stages: the result changes ------------------------------------------------------------


def reflect_patchify(features, patch_size):
    half = patch_size // 2
    padded = F.pad(features, (half,) * 4, mode="reflect")
    batch, channels = features.shape[:2]
    columns = F.unfold(padded, patch_size)
    return columns.reshape(batch, channels, patch_size, patch_size, -1).permute(0, 4, 1, 2, 3)


def first_m(points, m):
    return np.arange(m)


def mean_image_score(features, bank, batch_size):
    return cdist(features, bank).min(axis=1).reshape(batch_size, -1).mean(axis=1)


def swapped_auroc(labels, scores):
    labels = np.asarray(labels).astype(bool)
    return float((scores[~labels][:, None] > scores[labels][None, :]).mean())


@pytest.mark.parametrize("name, wrong, changes", [
    ("patchify", reflect_patchify, "bank"),
    ("greedy_k_center", first_m, "bank"),
    ("coreset_size", lambda n, ratio: max(1, int(n * ratio)) + 5, "bank"),
    ("image_score", mean_image_score, "scores"),
    ("auroc", swapped_auroc, "auroc"),
])
def test_a_wrong_stage_changes_what_the_model_computes(name, wrong, changes):
    library, library_prediction, library_auroc = library_run(name)
    model, prediction, auroc = run(RUNS_IT[name], {name: wrong})
    same = {
        "bank": library.memory_bank.shape == model.memory_bank.shape
        and np.allclose(library.memory_bank, model.memory_bank, atol=1e-5),
        "scores": np.allclose(library_prediction.scores, prediction.scores, rtol=1e-4),
        "auroc": auroc == pytest.approx(library_auroc),
    }
    assert not same[changes]
    if changes == "scores":  # the image score does not touch the bank or the maps
        np.testing.assert_array_equal(model.memory_bank, library.memory_bank)
        np.testing.assert_array_equal(prediction.maps, library_prediction.maps)


def test_metrics_rank_with_the_auroc_stage_and_keep_the_pixel_metrics():
    model, prediction, _ = run({}, {"auroc": swapped_auroc})
    masks = np.zeros((len(TEST), 48, 48), dtype=bool)
    masks[2:, 16:28, 20:32] = True
    ours = model.metrics(LABELS, prediction.scores, masks, prediction.maps)
    library = PatchCore(PatchCoreConfig(**SMALL)).metrics(LABELS, prediction.scores, masks, prediction.maps)
    assert ours["image_auroc"] == swapped_auroc(LABELS, prediction.scores) != library["image_auroc"]
    assert ours["pixel_auroc"] == library["pixel_auroc"] and ours["aupro"] == library["aupro"]


# -- refused in one line ---------------------------------------------------------------------------


def refusal(stages: dict, **overrides) -> str:
    with pytest.raises(ConfigError) as error:
        PatchCore(PatchCoreConfig(**{**SMALL, **overrides}), stages=stages)
    message = str(error.value)
    assert "\n" not in message and error.value.name == "stages"
    return message


def test_an_unknown_stage_is_refused_naming_it_and_the_valid_names():
    message = refusal({"patchfy": reflect_patchify})
    assert "'patchfy'" in message
    assert message.endswith("valid names are " + ", ".join(STAGES))


def test_a_stage_that_is_no_function_is_refused_naming_it():
    message = refusal({"align": "bilinear"})
    assert message == "stages ['align'] is a str, not a function"


@pytest.mark.parametrize("name, overrides, fix", [
    ("aggregator", dict(), "patch_feature='mean_mapped'"),
    ("greedy_k_center", dict(), "sampler='greedy'"),
    ("image_score", dict(reweight=2), "reweight=0"),
    ("reweighted_score", dict(), "reweight=b (b > 0)"),
])
def test_a_stage_the_config_does_not_run_is_refused_with_the_option_that_runs_it(name, overrides, fix):
    message = refusal({name: STAGES[name]}, **overrides)
    assert message == f"stages [{name!r}] is not run by this config: use {fix} to run it"


# -- the seam below images ---------------------------------------------------------------------------


def test_fit_features_and_score_features_equal_fit_and_predict():
    config = PatchCoreConfig(**SMALL)
    by_images = PatchCore(config).fit(TRAIN)
    expected = by_images.predict(TEST)
    model = PatchCore(config)
    train_features, grid = model.extract(TRAIN)
    test_features, test_grid = model.extract(TEST)
    assert train_features.shape == (2 * 36, 128) and grid == test_grid == (6, 6)
    model.fit_features(train_features, grid)
    prediction = model.score_features(test_features, grid, size=(48, 48))
    np.testing.assert_array_equal(model.memory_bank, by_images.memory_bank)
    np.testing.assert_array_equal(prediction.scores, expected.scores)
    np.testing.assert_array_equal(prediction.maps, expected.maps)
    np.testing.assert_array_equal(prediction.patch_scores, expected.patch_scores)
    assert prediction.maps.shape == (4, 48, 48) and prediction.patch_scores.shape == (4, 6, 6)


def test_score_features_before_a_fit_is_refused():
    with pytest.raises(RuntimeError, match=re.escape("call fit() or PatchCore.load() before score_features()")):
        PatchCore(PatchCoreConfig(**SMALL)).score_features(np.zeros((36, 128), np.float32), (6, 6))


# -- course.adopt and course.learner_stages ----------------------------------------------------------


def transposed_patchify(features, patch_size):
    """A right answer written another way: unfold, then a transpose and a reshape."""
    batch, channels, height, width = features.shape
    columns = F.unfold(features, patch_size, padding=patch_size // 2)  # (B, C*p*p, H*W)
    return columns.transpose(1, 2).reshape(batch, height * width, channels, patch_size, patch_size)


@pytest.fixture
def course_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("PCNOTES_COURSE_DIR", str(tmp_path / "course"))
    return tmp_path / "course"


def test_a_passing_function_is_kept_saved_and_reloaded(course_folder, capsys):
    assert course.adopt("patchify", transposed_patchify, True) is transposed_patchify
    assert capsys.readouterr().out == ""
    saved = course_folder / "patchify.py"
    assert saved.read_text().startswith("FUNCTION = 'transposed_patchify'\n# patchify: adopted")
    assert sorted(path.name for path in course_folder.iterdir()) == ["patchify.py"]  # no .partial left
    loaded = course.learner_stages()
    assert list(loaded) == ["patchify"] and loaded["patchify"] is not transposed_patchify
    features = torch.randn(2, 5, 6, 7)
    torch.testing.assert_close(loaded["patchify"](features, 3), STAGES["patchify"](features, 3))


def test_a_failing_function_gives_the_librarys_and_removes_the_stale_saved_answer(course_folder, capsys):
    course.adopt("patchify", transposed_patchify, True)
    assert course.adopt("patchify", reflect_patchify, False) is STAGES["patchify"]
    lines = capsys.readouterr().out.splitlines()
    assert lines == ["→ patchify: the library's function runs from here on, until your answer passes the check."]
    assert not (course_folder / "patchify.py").exists() and course.learner_stages() == {}


def test_adopt_names_the_valid_exercises_for_an_unknown_one(course_folder):
    with pytest.raises(KeyError, match="no exercise named 'patchfy': valid names are patchify, align"):
        course.adopt("patchfy", transposed_patchify, True)


def test_a_saved_answer_that_no_longer_loads_is_skipped_with_one_line(course_folder, capsys):
    course.adopt("patchify", transposed_patchify, True)
    course_folder.joinpath("align.py").write_text("FUNCTION = 'align'\ndef align(patches, grid, target:\n")
    stages = course.learner_stages()
    assert list(stages) == ["patchify"]
    out = capsys.readouterr().out
    assert out.count("\n") == 1
    assert out.startswith(f"→ align: {course_folder / 'align.py'} does not load (SyntaxError: ")
    assert out.rstrip().endswith("the library's runs")


def test_the_learners_saved_stages_run_a_patchcore(course_folder):
    course.adopt("patchify", transposed_patchify, True)
    course.adopt("greedy_k_center", first_m, True)
    stages = course.learner_stages()
    library, _, _ = library_run("greedy_k_center")
    model, _, _ = run(RUNS_IT["greedy_k_center"], stages)
    assert model.replaced == ["greedy_k_center", "patchify"]
    features, _ = library.extract(TRAIN)  # the library's patchify gives the same patch features
    assert model.memory_bank.shape == library.memory_bank.shape
    np.testing.assert_allclose(model.memory_bank, features[: len(library.memory_bank)], atol=1e-5)
    assert not np.allclose(model.memory_bank, library.memory_bank, atol=1e-5)


@pytest.mark.parametrize("overrides, stages", [
    ({}, None),
    ({"patch_feature": "mean_mapped"}, None),
    ({"patch_feature": "mean_mapped"}, {"align": STAGES["align"]}),
])
def test_patch_features_from_the_backbones_maps_equal_embed(overrides, stages):
    model = PatchCore(PatchCoreConfig(**{**SMALL, **overrides}), stages=stages)
    (features, grid), (embedded, embedded_grid) = model.patch_features(model.extractor(TEST)), model.embed(TEST)
    assert grid == embedded_grid == (6, 6)
    torch.testing.assert_close(features, embedded, rtol=0, atol=0)


def test_patch_features_of_other_layers_are_refused_naming_both():
    model = PatchCore(PatchCoreConfig(**SMALL))
    maps = model.extractor(TEST)
    with pytest.raises(ValueError) as error:
        model.patch_features({"features.13": maps["features.13"]})
    assert str(error.value) == ("feature maps of the layers features.6, features.13 expected (the config's), "
                                "got features.13")
