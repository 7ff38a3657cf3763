import json

import numpy as np
import pytest
import torch

from pcnotes.util.folders import MARKER, UnsafeTargetError
from pcnotes.config import ConfigError, PatchCoreConfig
from pcnotes.model import PatchCore


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
    assert sorted(p.name for p in (tmp_path / "model").iterdir()) == [MARKER, "config.json", "memory_bank.npy"]
    assert [p.name for p in tmp_path.iterdir()] == ["model"]  # no staging folder left behind
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
    with pytest.raises(ConfigError, match=r"num_neighbors \(5\) is larger than the memory bank of 1 entries"):
        model.fit(textured(1, seed=0))  # 784 * 0.001 -> a bank of 1
    with pytest.raises(RuntimeError, match="fit"):
        PatchCore(backbone="resnet18", weights="random").predict(textured(1, seed=0))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        PatchCore(backbone="resnet18", weights="random").fit(torch.zeros(3, 224, 224))


def test_overriding_the_backbone_takes_its_default_layers():
    base = PatchCoreConfig()  # mobilenet_v2: features.6, features.13
    model = PatchCore(base, backbone="resnet18", weights="random")
    assert model.config.layers == ("layer2", "layer3")


# -- issue 10: bad configs, unreadable saved models, the save guard -------------------------------


@pytest.mark.parametrize("overrides, message", [
    ({"layers": ("",)}, "layers must be layer names"),
    ({"layers": ("layer2", "layer2")}, "layers must each be named once, got layer2 twice"),
    ({"seed": -1}, r"seed must be an integer from 0 to 4294967295, got -1"),
    ({"seed": 2**70}, r"seed must be an integer from 0 to 4294967295, got 1180591620717411303424"),
    ({"reweight": "3"}, r"reweight \(b of eq. 7\) must be an integer >= 0, got '3'"),
    ({"sampler": "best"}, "sampler must be one of"),
])
def test_config_values_are_checked_when_made(overrides, message):
    with pytest.raises(ConfigError, match=message):
        PatchCoreConfig(backbone="resnet18", weights="random", **overrides)


def test_an_unknown_layer_is_a_config_error():
    with pytest.raises(ConfigError, match=r"layers must be feature layers of resnet18 \(layer1 to layer4\), got layer9"):
        PatchCore(backbone="resnet18", weights="random", layers=("layer9",))


def test_reweight_and_k_are_checked_against_the_bank_before_any_work():
    model = PatchCore(backbone="resnet18", weights="random", coreset_ratio=0.005, reweight=8)
    assert model.planned_bank_size(2) == int(2 * 28 * 28 * 0.005) == 7
    with pytest.raises(ConfigError, match=r"reweight \(8\) needs a memory bank of at least 9 entries, "
                                          r"not the 7 that 2 training images give"):
        model.check_fit(2)
    model.check_fit(3)  # 3 * 784 * 0.005 -> 11 entries: enough
    with pytest.raises(ConfigError, match="reweight"):
        model.fit(textured(2, seed=0))  # the fit checks too, before the coreset: nothing is kept
    assert model.memory_bank is None
    full = PatchCore(backbone="resnet18", weights="random", coreset_ratio=1.0, num_neighbors=3)
    assert full.planned_bank_size(1) == 784
    fitted = PatchCore(backbone="resnet18", weights="random", coreset_ratio=0.01).fit(textured(2, seed=0))
    assert len(fitted.memory_bank) == fitted.planned_bank_size(2)


@pytest.fixture
def saved(fitted, tmp_path):
    return fitted.save(tmp_path / "model")


def _meta(path):
    return json.loads((path / "config.json").read_text())


def _write_meta(path, meta):
    (path / "config.json").write_text(json.dumps(meta))


@pytest.mark.parametrize("damage, message", [
    (lambda meta: [meta], "holds a JSON list, not the object"),
    (lambda meta: None, "holds a JSON NoneType, not the object"),
    (lambda meta: {k: v for k, v in meta.items() if k != "grid"}, "lacks grid"),
    (lambda meta: {**meta, "memory_bank_shape": "big"}, "has bad values for memory_bank_shape"),
    (lambda meta: {**meta, "grid": [28, -1]}, "has bad values for grid"),
    (lambda meta: {**meta, "config": None}, "has bad values for config"),
    (lambda meta: {**meta, "config": {k: v for k, v in meta["config"].items() if k != "sigma"}},
     r"lacks keys \['sigma'\]"),
    (lambda meta: {**meta, "config": {**meta["config"], "num_neighbors": "1"}},
     "num_neighbors must be an integer, got '1'"),
    (lambda meta: {**meta, "config": {**meta["config"], "sigma": None}}, "sigma must be a finite number"),
    (lambda meta: {**meta, "config": {**meta["config"], "layers": "layer2"}}, "layers must be a list"),
    (lambda meta: {**meta, "config": {**meta["config"], "mean": [0.5]}}, "mean must be a list of 3 numbers"),
    (lambda meta: {**meta, "config": {**meta["config"], "squared": 0}}, "squared must be true or false"),
    # a valid value, but not the one saved: the model's hash covers config.json (issue 23)
    (lambda meta: {**meta, "config": {**meta["config"], "reweight": 10**6}}, "was changed since the model was saved"),
])
def test_load_gives_one_clear_error_for_a_damaged_config(saved, damage, message):
    _write_meta(saved, damage(_meta(saved)))
    with pytest.raises(ValueError, match=message) as info:
        PatchCore.load(saved)
    assert str(saved / "config.json") in str(info.value)


def _npy_header(shape, dtype="<f4"):
    import io

    stream = io.BytesIO()
    np.lib.format.write_array_header_1_0(stream, {"descr": dtype, "fortran_order": False, "shape": shape})
    return stream.getvalue()


def test_load_checks_the_bank_header_before_reading_it(saved):
    bank_path = saved / "memory_bank.npy"
    shape = tuple(_meta(saved)["memory_bank_shape"])
    cases = [
        (b"", "not the memory bank of this model"),
        (b"\x93NUMPY\x01\x00", "not the memory bank of this model"),
        (np.lib.format.magic(1, 0) + _npy_header((shape[0] * shape[1],))[8:], r"config.json says"),
        # a header claiming 4 TB: refused from the header, nothing allocated
        (_npy_header((10**9, 1024)) + b"\0" * 64, r"holds a \(1000000000, 1024\) float32 array, but config.json says"),
        (_npy_header(shape, "<f8") + b"\0" * 64, "config.json says"),
        (_npy_header(shape)[:-1] + b"\n", "not the memory bank"),
    ]
    for content, message in cases:
        bank_path.write_bytes(content)
        with pytest.raises(ValueError, match=message) as info:
            PatchCore.load(saved)
        assert str(bank_path) in str(info.value)
    # config.json and the header agree on a huge shape, the file is tiny: the size says no.
    meta = _meta(saved)
    meta["memory_bank_shape"] = [10**9, 1024]
    _write_meta(saved, meta)
    bank_path.write_bytes(_npy_header((10**9, 1024)) + b"\0" * 64)
    with pytest.raises(ValueError, match="bytes, not the"):
        PatchCore.load(saved)


def _tree(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_save_never_replaces_a_folder_of_other_files(fitted, tmp_path, monkeypatch):
    project = tmp_path / "project"
    (project / "src").mkdir(parents=True)
    (project / "src" / "main.py").write_text("print('years of work')")
    (project / "config.json").write_text("{}")  # a generic name proves nothing
    before = _tree(tmp_path)
    with pytest.raises(UnsafeTargetError, match="refusing to replace it"):
        fitted.save(project)
    monkeypatch.chdir(project)
    with pytest.raises(UnsafeTargetError, match="is the current folder"):
        fitted.save(".")
    with pytest.raises(UnsafeTargetError, match="contains the current folder"):
        fitted.save(project / "src" / ".." / "..")  # tmp_path
    assert _tree(tmp_path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["project"]  # no staging folder either
    # An earlier saved model is replaced; a user file put into it makes it theirs.
    model_dir = fitted.save(tmp_path / "model")
    fitted.save(model_dir)
    (model_dir / "notes.txt").write_text("my notes")
    with pytest.raises(UnsafeTargetError, match="notes.txt"):
        fitted.save(model_dir)
    assert (model_dir / "notes.txt").read_text() == "my notes"
