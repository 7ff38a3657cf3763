import pytest
import torch
import torch.nn.functional as F

from pcnotes.stages.s3_align import align_patches
from pcnotes.stages.s1_features import FeatureExtractor
from pcnotes.stages.s4_mean_mapped import aggregate, embed, mean_map
from pcnotes.stages.s2_patches import patchify
from pcnotes.stages.s6_scoring import scores_to_grid, unpatch_scores


def test_patchify_shapes_of_the_seed_table():
    layer2 = torch.randn(2, 512, 28, 28)
    columns = F.unfold(layer2, kernel_size=3, padding=1)
    assert columns.shape == (2, 4608, 784)
    patches, grid = patchify(layer2)
    assert patches.shape == (2, 784, 512, 3, 3) and grid == (28, 28)
    patches3, grid3 = patchify(torch.randn(2, 1024, 14, 14))
    assert patches3.shape == (2, 196, 1024, 3, 3) and grid3 == (14, 14)


def test_patchify_values_are_the_zero_padded_neighbourhood():
    x = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).reshape(2, 3, 4, 5)
    patches, grid = patchify(x)
    padded = F.pad(x, (1, 1, 1, 1))
    for b, h, w in [(0, 0, 0), (1, 2, 3), (1, 3, 4)]:
        expected = padded[b, :, h : h + 3, w : w + 3]
        assert torch.equal(patches[b, h * grid[1] + w], expected)
    assert patches[0, 0, :, 0, 0].eq(0).all()  # the corner's padding is zeros


def test_unpatch_and_grid_are_the_inverse_for_scores():
    scores = torch.arange(1568, dtype=torch.float32)
    per_image = unpatch_scores(scores, batch_size=2)
    assert per_image.shape == (2, 784)
    grid = scores_to_grid(per_image, (28, 28))
    assert grid.shape == (2, 28, 28)
    assert grid[1, 2, 3] == 784 + 2 * 28 + 3
    with pytest.raises(ValueError):
        unpatch_scores(scores, batch_size=3)


def test_align_follows_the_reference_reshape_order():
    patches = torch.randn(2, 196, 1024, 3, 3)
    aligned = align_patches(patches, (14, 14), (28, 28))
    assert aligned.shape == (2, 784, 1024, 3, 3)
    # The same resize done channel by channel on the (B, C, p, p, 14, 14) layout.
    maps = patches.reshape(2, 14, 14, 1024, 3, 3).permute(0, 3, 4, 5, 1, 2)
    b, c, i, j = 1, 77, 2, 0
    expected = F.interpolate(maps[b, c, i, j][None, None], size=(28, 28), mode="bilinear",
                             align_corners=False)[0, 0]
    assert torch.allclose(aligned[b, :, c, i, j].reshape(28, 28), expected)


def test_align_of_a_constant_map_is_constant_and_wrong_shapes_fail():
    aligned = align_patches(torch.full((1, 4, 2, 3, 3), 7.0), (2, 2), (4, 4))
    assert torch.allclose(aligned, torch.tensor(7.0))
    with pytest.raises(ValueError):
        align_patches(torch.randn(1, 5, 2, 3, 3), (2, 2), (4, 4))


def test_mean_mapper_and_aggregator_shapes():
    layer2 = mean_map(torch.randn(1568, 512, 3, 3), 1024)
    layer3 = mean_map(torch.randn(1568, 1024, 3, 3), 1024)
    stacked = torch.stack([layer2, layer3], dim=1)
    assert stacked.shape == (1568, 2, 1024)
    assert aggregate(stacked, 1024).shape == (1568, 1024)
    assert aggregate(stacked, 256).shape == (1568, 256)
    with pytest.raises(ValueError):
        aggregate(torch.randn(4, 8), 4)


def test_the_closed_form_of_the_two_pools():
    """1024/1024 on (512, 3, 3) + (1024, 3, 3) patches is a fixed linear map."""
    torch.manual_seed(0)
    p2, p3 = torch.randn(5, 512, 3, 3), torch.randn(5, 1024, 3, 3)
    feature = aggregate(torch.stack([mean_map(p2), mean_map(p3)], dim=1))
    kernel = torch.full((3, 3), 0.1)
    kernel[1, 1] = 0.2
    expected_layer2 = (p2 * kernel).sum((-1, -2))  # (5, 512)
    expected_layer3 = p3.mean((-1, -2)).reshape(5, 512, 2).mean(-1)  # pairs of channels
    assert torch.allclose(feature[:, :512], expected_layer2, atol=1e-6)
    assert torch.allclose(feature[:, 512:], expected_layer3, atol=1e-6)


@pytest.mark.slow
def test_embed_reproduces_every_shape_on_wide_resnet50_2(wrn50, two_images):
    maps = FeatureExtractor(wrn50, ["layer2", "layer3"])(two_images)
    features, grid = embed(maps)
    assert features.shape == (1568, 1024) and grid == (28, 28)
    # By hand, stage by stage, as the seed's table lists them.
    (p2, g2), (p3, g3) = patchify(maps["layer2"]), patchify(maps["layer3"])
    p3 = align_patches(p3, g3, g2)
    assert p3.shape == (2, 784, 1024, 3, 3)
    flat2, flat3 = p2.reshape(-1, 512, 3, 3), p3.reshape(-1, 1024, 3, 3)
    assert flat2.shape == (1568, 512, 3, 3) and flat3.shape == (1568, 1024, 3, 3)
    stacked = torch.stack([mean_map(flat2), mean_map(flat3)], dim=1)
    assert stacked.shape == (1568, 2, 1024)
    assert torch.equal(aggregate(stacked), features)
