"""A saved model keeps its patch feature and image size, whatever the defaults become."""

import json

import numpy as np
import pytest
import torch

import pcnotes.config
from pcnotes.config import PatchCoreConfig
from pcnotes.model import PatchCore, _model_sha256


def resealed(meta, bank_path):
    """``meta`` with its model_sha256 made again: a config saved this way, not edited afterwards."""
    return {**meta, "model_sha256": _model_sha256(meta, np.load(bank_path))}


def images(n, height, width, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.nn.functional.avg_pool2d(torch.randn(n, 3, height + 8, width + 8, generator=generator), 9, 1) * 4


@pytest.fixture(scope="module")
def whole_image_model(tmp_path_factory):
    """pooled_concat at 64 x 96, no crop: everything but the defaults."""
    model = PatchCore(patch_feature="pooled_concat", resize=(64, 96), crop=None, coreset_ratio=0.5)
    model.fit(images(2, 64, 96))
    return model, model.save(tmp_path_factory.mktemp("saved") / "model")


def test_the_options_are_in_config_json_and_come_back(whole_image_model):
    model, path = whole_image_model
    saved = json.loads((path / "config.json").read_text())["config"]
    assert saved["patch_feature"] == "pooled_concat" and saved["resize"] == [64, 96] and saved["crop"] is None
    loaded = PatchCore.load(path)
    assert loaded.config == model.config
    assert loaded.config.resize == (64, 96) and loaded.config.crop is None
    assert loaded.memory_bank.shape == (int(2 * 8 * 12 * 0.5), 128) and loaded.grid == (8, 12)
    queries = images(1, 64, 96, seed=1)
    assert np.array_equal(loaded.predict(queries).scores, model.predict(queries).scores)


def test_a_saved_model_keeps_its_feature_when_the_default_changes(whole_image_model, monkeypatch):
    _, path = whole_image_model
    monkeypatch.setitem(pcnotes.config.DEFAULT_PATCH_FEATURE, "mobilenet_v2", "mean_mapped")
    assert PatchCoreConfig().patch_feature == "mean_mapped"  # the new default...
    assert PatchCore.load(path).config.patch_feature == "pooled_concat"  # ...not for the saved model


def test_an_old_config_without_the_new_keys_is_the_reference_at_256_224(tmp_path):
    """config.json written before patch_feature existed (and without resize/crop): mean_mapped, 256/224."""
    old = PatchCore(patch_feature="mean_mapped", coreset_ratio=0.5).fit(images(1, 224, 224))
    path = old.save(tmp_path / "old")
    meta = json.loads((path / "config.json").read_text())
    for key in ("patch_feature", "resize", "crop"):
        del meta["config"][key]
    (path / "config.json").write_text(json.dumps(resealed(meta, path / "memory_bank.npy")))
    loaded = PatchCore.load(path)
    assert (loaded.config.patch_feature, loaded.config.resize, loaded.config.crop) == ("mean_mapped", 256, 224)
    assert loaded.config == old.config
    without = {key: value for key, value in PatchCoreConfig().to_dict().items()
               if key not in ("patch_feature", "resize", "crop")}
    assert PatchCoreConfig.from_dict(without).patch_feature == "mean_mapped"  # not today's mobilenet_v2 default


def test_a_bank_of_the_wrong_width_for_the_feature_is_refused(whole_image_model, tmp_path):
    _, path = whole_image_model
    meta = json.loads((path / "config.json").read_text())
    meta["config"]["patch_feature"] = "mean_mapped"  # a 128-d bank under a 1024-d feature
    (path.parent / "edited").mkdir()
    (path.parent / "edited" / "config.json").write_text(json.dumps(resealed(meta, path / "memory_bank.npy")))
    (path.parent / "edited" / "memory_bank.npy").write_bytes((path / "memory_bank.npy").read_bytes())
    with pytest.raises(ValueError, match=r"128 values per patch.*'mean_mapped' patch feature gives 1024"):
        PatchCore.load(path.parent / "edited")
