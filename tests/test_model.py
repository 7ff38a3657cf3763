import json

import numpy as np
import pytest
import torch

from pcnotes.model import PatchCore, PatchCoreConfig


def textured(n, seed, defect=False):
    """Small smooth random images; a defective one gets a bright square."""
    generator = torch.Generator().manual_seed(seed)
    base = torch.nn.functional.avg_pool2d(torch.randn(n, 3, 240, 240, generator=generator), 17, 1)
    images = base * 4
    if defect:
        images[:, :, 100:124, 60:84] += 6.0
    return images


@pytest.fixture(scope="module")
def fitted():
    model = PatchCore(backbone="resnet18", weights="random", coreset_ratio=0.25, seed=0)
    return model.fit(textured(4, seed=0))


def test_fit_builds_a_coreset_bank_and_predict_gives_scores_and_maps(fitted):
    assert fitted.grid == (28, 28)
    assert fitted.memory_bank.shape == (int(4 * 784 * 0.25), 1024)
    scores, maps = fitted.predict(textured(3, seed=1))
    assert scores.shape == (3,) and maps.shape == (3, 224, 224)
    prediction = fitted.predict(textured(2, seed=1))
    assert prediction.patch_scores.shape == (2, 28, 28)
    np.testing.assert_array_equal(prediction.scores, prediction.patch_scores.reshape(2, -1).max(1))


def test_a_defect_scores_higher_and_lights_up_where_it_is(fitted):
    good, bad = textured(2, seed=2), textured(2, seed=2, defect=True)
    good_scores, _ = fitted.predict(good)
    bad_scores, bad_maps = fitted.predict(bad)
    assert (bad_scores > good_scores).all()
    peak_row, peak_col = np.unravel_index(bad_maps[0].argmax(), bad_maps[0].shape)
    assert 80 <= peak_row <= 130 and 40 <= peak_col <= 90  # the square sits at (100:124, 60:84)


@pytest.mark.slow
def test_the_same_seed_gives_the_same_bank_and_scores():
    images, queries = textured(3, seed=0), textured(2, seed=5)
    a = PatchCore(backbone="resnet18", weights="random", coreset_ratio=0.1, seed=7).fit(images)
    b = PatchCore(backbone="resnet18", weights="random", coreset_ratio=0.1, seed=7).fit(images)
    assert np.array_equal(a.memory_bank, b.memory_bank)
    assert np.array_equal(a.predict(queries).scores, b.predict(queries).scores)


def test_save_load_round_trip_is_bit_identical(fitted, tmp_path):
    queries = textured(2, seed=3)
    before = fitted.predict(queries)
    fitted.save(tmp_path / "model")
    assert sorted(p.name for p in (tmp_path / "model").iterdir()) == ["config.json", "memory_bank.npy"]
    assert not list(tmp_path.glob(".model.*"))  # no staging folder left behind
    loaded = PatchCore.load(tmp_path / "model")
    after = loaded.predict(queries)
    assert np.array_equal(before.scores, after.scores) and np.array_equal(before.maps, after.maps)
    assert loaded.config == fitted.config and str(loaded.weights) == str(fitted.weights)


def test_load_refuses_another_format_version_or_another_config(fitted, tmp_path):
    path = fitted.save(tmp_path / "model")
    with pytest.raises(ValueError, match="another config.*coreset_ratio"):
        PatchCore.load(path, expect=PatchCoreConfig(backbone="resnet18", weights="random", coreset_ratio=0.5))
    meta = json.loads((path / "config.json").read_text())
    meta["format_version"] = 99
    (path / "config.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="format 99"):
        PatchCore.load(path)


def test_load_detects_a_corrupt_bank_and_a_missing_file(fitted, tmp_path):
    path = fitted.save(tmp_path / "model")
    bank = np.load(path / "memory_bank.npy")
    bank[0, 0] += 1
    np.save(path / "memory_bank.npy", bank)
    with pytest.raises(ValueError, match="checksum"):
        PatchCore.load(path)
    (path / "memory_bank.npy").unlink()
    with pytest.raises(FileNotFoundError, match="memory_bank.npy"):
        PatchCore.load(path)


@pytest.mark.slow
def test_fit_accepts_an_iterable_of_batches_like_a_dataloader():
    images = textured(4, seed=0)
    batches = [{"image": images[:2]}, {"image": images[2:]}]
    a = PatchCore(backbone="resnet18", weights="random", coreset_ratio=1.0).fit(batches)
    b = PatchCore(backbone="resnet18", weights="random", coreset_ratio=1.0).fit(images)
    assert np.array_equal(a.memory_bank, b.memory_bank) and a.memory_bank.shape == (4 * 784, 1024)


@pytest.mark.slow
def test_reweighting_and_squared_scores_change_only_what_they_should(fitted):
    queries = textured(2, seed=4)
    plain = fitted.predict(queries)
    squared = PatchCore(fitted.config, squared=True)
    squared._set_bank(fitted.memory_bank)
    np.testing.assert_allclose(squared.predict(queries).scores, plain.scores**2, rtol=1e-4)
    reweighted = PatchCore(fitted.config, reweight=3)
    reweighted._set_bank(fitted.memory_bank)
    weighted = reweighted.predict(queries)
    assert np.all(weighted.scores < plain.scores) and np.all(weighted.scores >= 0.75 * plain.scores - 1e-6)
    np.testing.assert_array_equal(weighted.maps, plain.maps)  # eq. 7 touches the image score only


@pytest.mark.parametrize("overrides, message", [
    ({"coreset_ratio": 0}, r"coreset_ratio must be in \(0, 1\], got 0"),
    ({"coreset_ratio": 1.5}, r"got 1.5"),
    ({"coreset_ratio": -0.1}, r"got -0.1"),
    ({"num_neighbors": 0}, "num_neighbors"),
])
def test_bad_configs_are_clear_errors(overrides, message):
    with pytest.raises(ValueError, match=message):
        PatchCoreConfig(**overrides)


@pytest.mark.slow
def test_k_larger_than_the_bank_and_misuse_are_clear_errors():
    model = PatchCore(backbone="resnet18", weights="random", coreset_ratio=0.001, num_neighbors=5)
    with pytest.raises(ValueError, match="num_neighbors=5 is larger than the memory bank"):
        model.fit(textured(1, seed=0))  # 784 * 0.001 -> a bank of 1
    with pytest.raises(RuntimeError, match="fit"):
        PatchCore(backbone="resnet18", weights="random").predict(textured(1, seed=0))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        PatchCore(backbone="resnet18", weights="random").fit(torch.zeros(3, 224, 224))


def test_overriding_the_backbone_takes_its_default_layers():
    base = PatchCoreConfig()  # mobilenet_v2: features.6, features.13
    model = PatchCore(base, backbone="resnet18", weights="random")
    assert model.config.layers == ("layer2", "layer3")
