"""The two patch features: their shapes, and the reference path kept bit for bit.

``tests/data/embed_reference.npz`` holds two small feature maps and what
``pcnotes.stages.s4_mean_mapped.embed`` returned for them before the second patch feature
was added (commit fb87a8c); the reference path must keep returning exactly
that.
"""

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pcnotes.stages.s3_align import align_patches
from pcnotes.stages.s1_features import FeatureExtractor
from pcnotes.stages.s4_mean_mapped import embed, mean_map
from pcnotes.config import DEFAULT_PATCH_FEATURE, PATCH_FEATURES, PatchCoreConfig
from pcnotes.model import PatchCore
from pcnotes.stages.s2_patches import patchify
from pcnotes.stages.s4_pooled_concat import pool_neighbourhood, pooled_concat, resize_to_grid

REFERENCE = Path(__file__).parent / "data" / "embed_reference.npz"


def frozen_reference(maps, pretrain_dim, target_dim):
    """patchcore-inspection's patch feature written out with torch alone (no pcnotes code)."""
    grid = maps[0].shape[-2:]
    per_layer = []
    for fmap in maps:
        batch, channels, height, width = fmap.shape
        columns = F.unfold(fmap, kernel_size=3, padding=1).reshape(batch, channels, 3, 3, height, width)
        if (height, width) != tuple(grid):
            columns = F.interpolate(columns.reshape(-1, 1, height, width), size=tuple(grid),
                                    mode="bilinear", align_corners=False)
            columns = columns.reshape(batch, channels, 3, 3, *grid)
        patches = columns.permute(0, 4, 5, 1, 2, 3).reshape(-1, 1, channels * 9)
        per_layer.append(F.adaptive_avg_pool1d(patches, pretrain_dim)[:, 0])
    stacked = torch.stack(per_layer, dim=1).reshape(len(per_layer[0]), 1, -1)
    return F.adaptive_avg_pool1d(stacked, target_dim)[:, 0]


def test_the_reference_feature_returns_what_it_returned_before():
    saved = np.load(REFERENCE)
    maps = {"a": torch.from_numpy(saved["layer1"]), "b": torch.from_numpy(saved["layer2"])}
    features, grid = embed(maps, pretrain_dim=16, target_dim=20)
    assert grid == tuple(saved["grid"]) == (6, 5)
    assert np.array_equal(features.numpy(), saved["features_16_20"])
    features, _ = embed(list(maps.values()), pretrain_dim=64, target_dim=48)
    assert np.array_equal(features.numpy(), saved["features_64_48"])


def test_the_model_with_mean_mapped_is_the_frozen_reference_formula_bit_for_bit():
    model = PatchCore(patch_feature="mean_mapped")  # mobilenet_v2, shipped weights
    images = torch.randn(2, 3, 160, 224, generator=torch.Generator().manual_seed(0))
    features, grid = model.embed(images)
    maps = list(model.extractor(images).values())
    assert features.shape == (2 * 20 * 28, 1024) and grid == (20, 28)
    assert torch.equal(features, frozen_reference(maps, 1024, 1024))


def test_pooled_concat_shapes_on_mobilenet_v2_sized_maps():
    maps = {"features.6": torch.randn(2, 32, 28, 28), "features.13": torch.randn(2, 96, 14, 14)}
    assert pool_neighbourhood(maps["features.13"]).shape == (2, 96, 14, 14)
    assert resize_to_grid(maps["features.13"], (28, 28)).shape == (2, 96, 28, 28)
    features, grid = pooled_concat(maps)
    assert features.shape == (2 * 784, 32 + 96) and grid == (28, 28)
    features, grid = pooled_concat({"a": torch.randn(1, 32, 32, 76), "b": torch.randn(1, 96, 16, 38)})
    assert features.shape == (32 * 76, 128) and grid == (32, 76)
    with pytest.raises(ValueError, match="at least one"):
        pooled_concat({})


def test_pooled_concat_on_wide_resnet50_2_is_1536_d(wrn50, two_images):
    maps = FeatureExtractor(wrn50, ["layer2", "layer3"])(two_images)
    features, grid = pooled_concat(maps)
    assert features.shape == (1568, 512 + 1024) and grid == (28, 28)


def test_pooled_concat_is_the_mean_mapper_with_one_value_per_channel():
    """Pooling each channel's 3x3 window = mean_map(patch, dim=C); pool and resize commute."""
    generator = torch.Generator().manual_seed(1)
    shallow, deep = torch.randn(2, 8, 10, 12, generator=generator), torch.randn(2, 24, 5, 6, generator=generator)
    features, grid = pooled_concat([shallow, deep])
    (p1, g1), (p2, g2) = patchify(shallow), patchify(deep)
    p2 = align_patches(p2, g2, g1)
    by_mean_map = torch.cat([mean_map(p1.reshape(-1, 8, 3, 3), 8), mean_map(p2.reshape(-1, 24, 3, 3), 24)], 1)
    assert grid == (10, 12)
    torch.testing.assert_close(features, by_mean_map, rtol=0, atol=1e-6)
    # Row order: image, then grid row, then grid column; columns: layer by layer, channel by channel.
    b, h, w = 1, 3, 7
    row = features[b * 120 + h * 12 + w]
    torch.testing.assert_close(row[:8], F.pad(shallow, (1, 1, 1, 1))[b, :, h : h + 3, w : w + 3].mean((1, 2)))


def test_pooled_concat_keeps_the_channels_share_and_mean_mapped_does_not():
    """The point of the second feature: on a 32 + 96 channel backbone the deeper layer keeps 3/4."""
    shallow, deep = torch.zeros(1, 32, 8, 8), torch.ones(1, 96, 4, 4)
    centre = 4 * 8 + 4  # its 3x3 windows on both layers lie inside the maps: no padding
    pooled, _ = pooled_concat([shallow, deep])
    assert pooled.shape == (64, 128)
    assert torch.equal(pooled[centre], torch.cat([torch.zeros(32), torch.ones(96)]))
    mapped, _ = embed([shallow, deep])
    assert mapped.shape == (64, 1024)
    assert torch.equal(mapped[centre], torch.cat([torch.zeros(512), torch.ones(512)]))  # one half each


def test_config_resolves_and_checks_the_patch_feature():
    assert PATCH_FEATURES == ("mean_mapped", "pooled_concat")
    assert PatchCoreConfig().patch_feature == DEFAULT_PATCH_FEATURE["mobilenet_v2"] == "pooled_concat"
    assert PatchCoreConfig(backbone="wide_resnet50_2").patch_feature == "mean_mapped"
    assert PatchCoreConfig(backbone="resnet18").patch_feature == "mean_mapped"
    assert PatchCoreConfig(patch_feature="mean_mapped").patch_feature == "mean_mapped"
    with pytest.raises(ValueError, match="patch_feature must be one of"):
        PatchCoreConfig(patch_feature="mean")
    model = PatchCore(PatchCoreConfig(), backbone="resnet18", weights="random")
    assert model.config.patch_feature == "mean_mapped"  # the new backbone's default, as with layers


@pytest.mark.parametrize("feature, dim", [("mean_mapped", 1024), ("pooled_concat", 128)])
def test_the_model_embeds_with_its_feature_and_says_its_size(feature, dim):
    model = PatchCore(patch_feature=feature)
    features, grid = model.embed(torch.zeros(1, 3, 224, 224))
    assert features.shape == (784, dim) and grid == (28, 28) and model.feature_dim == dim
