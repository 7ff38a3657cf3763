"""pcnotes.app.plots: what each plotting function draws, and that PNGs are written atomically."""

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from PIL import Image

from pcnotes.app import plots as viz
from pcnotes.data.mvtec import IMAGENET_MEAN, IMAGENET_STD, unnormalize

SIZE = 32


@pytest.fixture
def sample():
    rng = np.random.default_rng(0)
    image = rng.random((SIZE, SIZE, 3)).astype(np.float32)
    amap = rng.random((SIZE, SIZE)).astype(np.float32)
    mask = np.zeros((SIZE, SIZE), dtype=bool)
    mask[8:20, 10:24] = True
    return image, amap, mask


def pixels(path):
    with Image.open(path) as png:
        return np.asarray(png.convert("RGB"))


# -- single panels -------------------------------------------------------------------


def test_to_rgb_unnormalises_a_tensor_and_clips_an_array():
    rgb = torch.rand(SIZE, SIZE, 3)
    normalised = ((rgb - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)).permute(2, 0, 1)
    assert normalised.shape == (3, SIZE, SIZE)
    np.testing.assert_allclose(viz.to_rgb(normalised), rgb.numpy(), atol=1e-6)
    np.testing.assert_array_equal(viz.to_rgb(normalised), unnormalize(normalised))
    assert viz.to_rgb(np.full((4, 4, 3), 1.5)).max() == 1.0
    with pytest.raises(ValueError, match=r"\(3, H, W\) or \(H, W, 3\)"):
        viz.to_rgb(np.zeros((4, 4)))


def test_show_image_draws_one_image_without_ticks(sample):
    image, _, _ = sample
    ax = Figure().subplots()
    assert viz.show_image(ax, image) is ax
    assert len(ax.images) == 1
    np.testing.assert_array_equal(ax.images[0].get_array(), image)
    assert list(ax.get_xticks()) == [] and list(ax.get_yticks()) == []


def test_overlay_heatmap_puts_the_map_on_top_with_the_given_scale(sample):
    image, amap, _ = sample
    ax = Figure().subplots()
    viz.overlay_heatmap(ax, image, amap, vmin=0.2, vmax=0.7, alpha=0.4)
    assert len(ax.images) == 2
    heat = ax.images[-1]
    np.testing.assert_array_equal(heat.get_array(), amap)
    assert heat.get_clim() == (0.2, 0.7)
    assert heat.get_alpha() == 0.4
    assert heat.get_cmap().name == "jet"
    with pytest.raises(ValueError, match=r"\(H, W\)"):
        viz.overlay_heatmap(ax, image, amap[None])


def test_mask_contour_only_for_a_defect(sample):
    _, _, mask = sample
    ax = Figure().subplots()
    viz.draw_mask_contour(ax, np.zeros_like(mask))
    assert len(ax.collections) == 0  # a good image has nothing to outline
    viz.draw_mask_contour(ax, mask, color="white")
    assert len(ax.collections) == 1
    contour = ax.collections[0]
    assert list(contour.levels) == [0.5]
    # The outline runs along the mask's border: every vertex is within a
    # pixel of the rectangle rows 8..19, columns 10..23.
    vertices = np.concatenate([p.vertices for p in contour.get_paths()])
    assert vertices[:, 0].min() >= 9 and vertices[:, 0].max() <= 24
    assert vertices[:, 1].min() >= 7 and vertices[:, 1].max() <= 20


def test_shared_scale_is_the_min_and_max_over_all_maps():
    maps = np.stack([np.full((4, 4), 1.0), np.full((4, 4), 3.0)])
    maps[0, 0, 0] = -2.0
    assert viz.shared_scale(maps) == (-2.0, 3.0)


# -- composite figures ----------------------------------------------------------------


def test_heatmap_panel_has_three_panels_and_a_colour_bar(sample):
    image, amap, mask = sample
    fig = viz.heatmap_panel(image, amap, mask, title="scratch 003", vmin=0.0, vmax=2.0)
    assert isinstance(fig, Figure)
    panels, colorbar = fig.axes[:3], fig.axes[3]
    assert len(fig.axes) == 4
    assert [len(ax.images) for ax in panels] == [1, 2, 1]
    assert panels[1].images[1].get_clim() == (0.0, 2.0)
    assert len(panels[2].collections) == 1  # the ground-truth outline
    assert colorbar.get_ylim() == (0.0, 2.0)
    assert fig._suptitle.get_text() == "scratch 003"
    assert [ax.get_title() for ax in panels] == ["image", "anomaly map", "ground truth"]


def test_heatmap_panel_without_ground_truth_has_two_panels(sample):
    image, amap, _ = sample
    fig = viz.heatmap_panel(image, amap)
    assert len(fig.axes) == 3  # image, overlay, colour bar
    assert fig.axes[1].images[1].get_clim() == (float(amap.min()), float(amap.max()))
    width, height = fig.get_size_inches()
    three = viz.heatmap_panel(image, amap, np.zeros((SIZE, SIZE)))
    assert three.get_size_inches()[0] > width > height
    assert three.axes[2].get_title() == "ground truth: good"


def test_panel_writer_matches_a_fresh_panel_and_drops_the_old_outline(tmp_path, sample):
    image, amap, mask = sample
    other = image[::-1].copy()
    writer = viz.PanelWriter(0.0, 1.0, size=(SIZE, SIZE))
    writer.save(tmp_path / "first.png", image, amap, mask, title="first")
    writer.save(tmp_path / "second.png", other, amap.T, np.zeros_like(mask), title="second")
    fresh = viz.heatmap_panel(other, amap.T, np.zeros_like(mask), title="second", vmin=0.0, vmax=1.0)
    viz.save_figure(fresh, tmp_path / "fresh.png")
    np.testing.assert_array_equal(pixels(tmp_path / "second.png"), pixels(tmp_path / "fresh.png"))
    assert not np.array_equal(pixels(tmp_path / "first.png"), pixels(tmp_path / "second.png"))
    with pytest.raises(ValueError, match="pass a mask"):
        writer.save(tmp_path / "third.png", image, amap)


def overview_item(category, score, label, rng):
    return dict(image=rng.random((SIZE, SIZE, 3)), amap=rng.random((SIZE, SIZE)) * score,
                mask=np.eye(SIZE, dtype=bool) if label else np.zeros((SIZE, SIZE), bool),
                score=score, label=label, defect="crack" if label else "good", category=category)


def test_overview_grid_puts_categories_in_rows():
    rng = np.random.default_rng(0)
    items = [overview_item("tiles", 3.0, 1, rng), overview_item("tiles", 1.0, 0, rng),
             overview_item("wood", 2.5, 1, rng)]
    fig = viz.overview_grid(items, title="overview")
    assert len(fig.axes) == 4  # 2 rows x 2 columns
    tiles_hi, tiles_lo, wood_hi, empty = fig.axes
    assert [tiles_hi.get_ylabel(), wood_hi.get_ylabel()] == ["tiles", "wood"]
    assert not empty.axison and len(empty.images) == 0  # wood has one item only
    assert "score 3.00" in tiles_hi.get_title() and "true: defect: crack" in tiles_hi.get_title()
    assert "true: good" in tiles_lo.get_title()
    assert len(tiles_hi.collections) == 1 and len(tiles_lo.collections) == 0
    # One colour scale per row: the range of that row's maps.
    row = np.stack([items[0]["amap"], items[1]["amap"]])
    assert tiles_hi.images[1].get_clim() == tiles_lo.images[1].get_clim() == viz.shared_scale(row)


def test_overview_grid_uses_given_scales_and_rejects_nothing():
    rng = np.random.default_rng(1)
    item = overview_item("fabric", 1.0, 0, rng) | {"vmin": -1.0, "vmax": 5.0}
    fig = viz.overview_grid([item])
    assert fig.axes[0].images[1].get_clim() == (-1.0, 5.0)
    with pytest.raises(ValueError, match="at least one item"):
        viz.overview_grid([])


# -- PCA ------------------------------------------------------------------------------


def test_pca_scatter_projects_the_bank_and_the_selection():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(300, 16)).astype(np.float32)
    features[:, 0] *= 10  # one dominant direction
    selected = np.array([3, 50, 299])
    ax = viz.pca_scatter(Figure().subplots(), features, selected)
    bank, picked = (c.get_offsets() for c in ax.collections)
    assert bank.shape == (300, 2) and picked.shape == (3, 2)
    np.testing.assert_allclose(picked, bank[selected], rtol=1e-5, atol=1e-5)
    # PC 1 is the dominant feature direction.
    assert abs(np.corrcoef(bank[:, 0], features[:, 0])[0, 1]) > 0.99
    assert ax.get_xlabel().startswith("PC 1")


def test_pca_scatter_subsamples_deterministically():
    features = np.random.default_rng(0).normal(size=(500, 8))
    first = viz.pca_scatter(Figure().subplots(), features, np.arange(200), max_points=100, seed=3)
    again = viz.pca_scatter(Figure().subplots(), features, np.arange(200), max_points=100, seed=3)
    for a, b in zip(first.collections, again.collections):
        np.testing.assert_array_equal(a.get_offsets(), b.get_offsets())
    assert [len(c.get_offsets()) for c in first.collections] == [100, 100]
    with pytest.raises(ValueError, match=r"\(N >= 2, D\)"):
        viz.pca_scatter(Figure().subplots(), features[0])


# -- files ----------------------------------------------------------------------------


def test_save_figure_writes_a_png_and_closes_pyplot_figures(tmp_path):
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(4, 2), dpi=50)
    fig.subplots().plot([0, 1], [1, 0])
    number = fig.number
    path = viz.save_figure(fig, tmp_path / "sub" / "plot.png")
    assert path == tmp_path / "sub" / "plot.png"
    with Image.open(path) as png:
        assert png.format == "PNG" and png.size == (200, 100)
    assert not plt.fignum_exists(number)
    assert sorted(p.name for p in path.parent.iterdir()) == ["plot.png"]  # no temporary left


def test_save_figure_leaves_an_existing_file_alone_when_rendering_fails(tmp_path, monkeypatch):
    path = tmp_path / "plot.png"
    path.write_bytes(b"old")
    fig = Figure()

    def broken(stream, **kwargs):
        stream.write(b"partial")
        raise RuntimeError("disk full")

    monkeypatch.setattr(fig, "savefig", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        viz.save_figure(fig, path)
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["plot.png"]
