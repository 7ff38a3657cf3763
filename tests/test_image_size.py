"""Image size options: the crop, the whole-image mode and higher resolutions.

The masks, the anomaly maps and so the metrics must stay on the pixels the
model saw, also for grayscale photographs that are not square.
"""

import numpy as np
import pytest
import torch
from PIL import Image

from pcnotes.data.mvtec import image_transform, mask_transform, unnormalize, whole_image_size
from pcnotes.app.evaluation import evaluate_category
from pcnotes.data.mvtec import load_split, stack
from pcnotes.config import PatchCoreConfig
from pcnotes.model import PatchCore

HEIGHT, WIDTH = 250, 600  # a grayscale photograph, wider than high
SQUARE = (slice(100, 140), slice(520, 560))  # a defect near the right end


def texture(seed: int) -> np.ndarray:
    """A smooth grayscale texture ``(250, 600)`` uint8."""
    from scipy.ndimage import gaussian_filter

    noise = gaussian_filter(np.random.default_rng(seed).normal(size=(HEIGHT, WIDTH)), 3)
    return (128 + 60 * noise / noise.std()).clip(0, 255).astype(np.uint8)


def scaled_rows(start, stop, before, after):
    """Rows ``start:stop`` of a ``before``-row image after a NEAREST resize to ``after`` rows.

    Pillow samples each output pixel at its centre: input row ``floor((i + 0.5) * before / after)``.
    """
    rows = np.floor((np.arange(after) + 0.5) * before / after).astype(int)
    inside = np.nonzero((rows >= start) & (rows < stop))[0]
    return int(inside.min()), int(inside.max())


@pytest.fixture(scope="module")
def gray_wide(tmp_path_factory):
    """A tiny MVTec-layout category of 8-bit grayscale 600 x 250 PNGs."""
    root = tmp_path_factory.mktemp("gray_wide")
    category = root / "plate"
    for folder in ("train/good", "test/good", "test/spot", "ground_truth/spot"):
        (category / folder).mkdir(parents=True)
    for i in range(3):
        Image.fromarray(texture(i), mode="L").save(category / "train" / "good" / f"{i:03d}.png")
    Image.fromarray(texture(10), mode="L").save(category / "test" / "good" / "000.png")
    spotted, mask = texture(11), np.zeros((HEIGHT, WIDTH), np.uint8)
    spotted[SQUARE], mask[SQUARE] = 255, 255
    Image.fromarray(spotted, mode="L").save(category / "test" / "spot" / "000.png")
    Image.fromarray(mask, mode="L").save(category / "ground_truth" / "spot" / "000_mask.png")
    return root


def test_whole_image_size_keeps_the_aspect_ratio_in_multiples_of_16():
    assert whole_image_size(600, 250) == (256, 608)
    assert whole_image_size(256, 256) == (256, 256)
    assert whole_image_size(250, 600, shorter=320) == (768, 320)
    with pytest.raises(ValueError, match="positive"):
        whole_image_size(0, 10)


def test_the_whole_image_mode_keeps_a_defect_that_the_centre_crop_cuts_away():
    mask = np.zeros((HEIGHT, WIDTH), np.uint8)
    mask[SQUARE] = 255
    mask = Image.fromarray(mask, mode="L")
    cropped = mask_transform(256, 224)(mask)
    assert cropped.shape == (1, 224, 224) and cropped.sum() == 0  # the middle 224 of 614 columns
    whole = mask_transform((256, 608), None)(mask)
    assert whole.shape == (1, 256, 608)
    rows = torch.nonzero(whole[0].any(dim=1)).flatten()
    cols = torch.nonzero(whole[0].any(dim=0)).flatten()
    assert (int(rows.min()), int(rows.max())) == scaled_rows(100, 140, HEIGHT, 256)
    assert (int(cols.min()), int(cols.max())) == scaled_rows(520, 560, WIDTH, 608)


def test_image_and_mask_go_through_the_same_geometry_in_the_whole_image_mode():
    spotted, mask = np.zeros((HEIGHT, WIDTH), np.uint8), np.zeros((HEIGHT, WIDTH), np.uint8)
    spotted[SQUARE], mask[SQUARE] = 255, 255
    image = image_transform((256, 608), None, mean=(0, 0, 0), std=(1, 1, 1))(
        Image.fromarray(spotted, mode="L").convert("RGB"))
    target = mask_transform((256, 608), None)(Image.fromarray(mask, mode="L"))[0] > 0.5
    assert image.shape == (3, 256, 608)
    bright = image[0] > 0.5
    assert (bright & target).sum() / (bright | target).sum() > 0.95  # the same pixels, up to the edges


@pytest.mark.parametrize("resize, crop, message", [
    (256, None, r"crop=None \(the whole image\) needs resize=\(height, width\)"),
    (256, 300, r"crop 300 does not fit inside resize=256"),
    ((200, 400), (224, 224), r"does not fit"),
    ((0, 10), None, r"resize must be a positive int or \(height, width\)"),
    ((1, 2, 3), None, r"resize must be"),
    (256, True, r"crop must be"),
])
def test_image_sizes_that_cannot_work_are_clear_errors(resize, crop, message):
    with pytest.raises(ValueError, match=message):
        PatchCoreConfig(resize=resize, crop=crop)


def test_sizes_from_json_lists_become_tuples():
    config = PatchCoreConfig.from_dict({**PatchCoreConfig().to_dict(), "resize": [256, 608], "crop": None})
    assert config.resize == (256, 608) and config.crop is None
    assert PatchCoreConfig(resize=[366, 400], crop=[320, 352]).crop == (320, 352)


def test_a_higher_resolution_gives_a_finer_grid_and_maps_at_the_input_size():
    config = PatchCoreConfig(resize=366, crop=320, coreset_ratio=0.5)
    transform = image_transform(config.resize, config.crop)
    batch = torch.stack([transform(Image.fromarray(texture(i), mode="L").convert("RGB")) for i in range(2)])
    assert batch.shape == (2, 3, 320, 320)
    model = PatchCore(config).fit(batch[:1])
    assert model.grid == (40, 40) and model.memory_bank.shape == (800, 128)
    prediction = model.predict(batch[1:])
    assert prediction.patch_scores.shape == (1, 40, 40) and prediction.maps.shape == (1, 320, 320)


def test_gray_wide_photographs_end_to_end_masks_maps_and_metrics_line_up(gray_wide):
    size = whole_image_size(WIDTH, HEIGHT)
    config = PatchCoreConfig(resize=size, crop=None, coreset_ratio=0.5)
    test = load_split(gray_wide, "plate", "test", config)
    item = test[1]
    assert item["defect"] == "spot" and item["image"].shape == (3, 256, 608) and item["mask"].shape == (1, 256, 608)
    rgb = unnormalize(item["image"])  # (256, 608, 3) in [0, 1]
    np.testing.assert_allclose(rgb[..., 0], rgb[..., 2], atol=1e-6)  # grayscale: three equal channels
    model, result = evaluate_category(gray_wide, "plate", config)
    maps, (_, masks) = result.maps(), stack(test)
    assert model.grid == (32, 76)
    assert maps.shape == masks.shape == (2, 256, 608)
    assert result.metrics["input_size"] == "256x608" and result.metrics["feature_dim"] == 128
    peak = np.unravel_index(maps[1].argmax(), maps[1].shape)
    rows, cols = scaled_rows(100, 140, HEIGHT, 256), scaled_rows(520, 560, WIDTH, 608)
    assert rows[0] - 8 <= peak[0] <= rows[1] + 8 and cols[0] - 8 <= peak[1] <= cols[1] + 8
    assert masks[1][rows[0]:rows[1] + 1, cols[0]:cols[1] + 1].all() and masks[1].sum() == (
        (rows[1] - rows[0] + 1) * (cols[1] - cols[0] + 1))
    assert result.scores[1] > result.scores[0]
    assert result.metrics["image_auroc"] == 1.0 and result.metrics["pixel_auroc"] > 0.95
