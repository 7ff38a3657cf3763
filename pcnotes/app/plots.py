"""Every plot of the project: images, anomaly maps, masks, overviews, PCA.

The CLI, the notebooks and the explorer widget all draw through these
functions, so a heat map looks the same wherever it appears.

Conventions:

* An *image* is either a normalised tensor/array ``(3, H, W)`` as the data
  pipeline produces it (it is un-normalised for display with
  :func:`pcnotes.data.mvtec.unnormalize`), or an array ``(H, W, 3)`` already in
  [0, 1].
* An *anomaly map* ``amap`` is ``(H, W)``, same size as the image; a *mask* is
  ``(H, W)`` bool or {0, 1}.
* Functions that draw into one panel take a matplotlib ``ax`` and return it;
  functions that lay out several panels return a new ``Figure``.

Figures are made with ``matplotlib.figure.Figure`` directly, not through
``pyplot``: nothing here depends on (or changes) the interactive backend,
nothing is ever shown, and saving a PNG renders with Agg. In a notebook, make
the figure the last expression of a cell (or ``display(fig)``) to see it.

Colour scale: an anomaly map is a distance to the nearest normal patch, so
its numbers only mean something *relative to other maps of the same model*.
Compare maps on one shared scale (:func:`shared_scale`), never each
stretched to its own min/max, which would make a clean image look as
anomalous as a broken one. The reference code does the same by min-max
normalising over the whole test set.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib import patheffects
from matplotlib.cm import ScalarMappable
from matplotlib.figure import Figure

from pcnotes.data.mvtec import IMAGENET_MEAN, IMAGENET_STD, unnormalize
from pcnotes.util.folders import write_file

__all__ = [
    "add_colorbar",
    "to_rgb",
    "shared_scale",
    "show_image",
    "overlay_heatmap",
    "draw_mask_contour",
    "heatmap_panel",
    "PanelWriter",
    "overview_grid",
    "fit_bank_pca",
    "pca_scatter",
    "save_figure",
]

PANEL_INCHES = 224 / 72  # one 224 px panel at the CLI's dpi of 72: no resampling
CONTOUR_WIDTH = 1.5
#: The smallest text of any figure here: 9 pt is 9 px at the CLI's dpi of 72 and 10 px at the
#: notebooks' 80, legible where the book shows a figure at its own width (tools/figure_fonts.py).
MIN_FONT_PT = 9


# -- single panels --------------------------------------------------------------


def to_rgb(image, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> np.ndarray:
    """Anything image-like -> ``(H, W, 3)`` float array in [0, 1] for ``imshow``.

    A ``(3, H, W)`` tensor/array is taken to be normalised with ``mean``/``std``
    and is un-normalised; an ``(H, W, 3)`` array is only clipped to [0, 1].
    """
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu().numpy()
    array = np.asarray(image, dtype=np.float32)
    if array.ndim == 3 and array.shape[0] == 3 and array.shape[-1] != 3:
        return unnormalize(array, mean, std)
    if array.ndim == 3 and array.shape[-1] == 3:
        return np.clip(array, 0.0, 1.0)
    raise ValueError(f"expected an image (3, H, W) or (H, W, 3), got shape {array.shape}")


def shared_scale(maps) -> tuple[float, float]:
    """``(vmin, vmax)`` over a whole set of maps ``(N, H, W)``: one colour scale for all."""
    maps = np.asarray(maps)
    return float(maps.min()), float(maps.max())


def _clean(ax) -> None:
    ax.set_xticks([])
    ax.set_yticks([])


def show_image(ax, image):
    """Draw an image (see :func:`to_rgb`) without ticks; returns ``ax``."""
    ax.imshow(to_rgb(image), interpolation="nearest")
    _clean(ax)
    return ax


def overlay_heatmap(ax, image, amap, *, vmin=None, vmax=None, alpha=0.5, cmap="jet"):
    """The image with the anomaly map ``(H, W)`` drawn half-transparent on top; returns ``ax``.

    Pass the same ``vmin``/``vmax`` for every image of a set (see
    :func:`shared_scale`); left at ``None`` the map is stretched to its own
    range, which suits a single map on its own only. The map's ``AxesImage``
    is ``ax.images[-1]`` (e.g. for a colour bar).
    """
    amap = np.asarray(amap)
    if amap.ndim != 2:
        raise ValueError(f"expected an anomaly map (H, W), got shape {amap.shape}")
    show_image(ax, image)
    ax.imshow(amap, cmap=cmap, alpha=alpha, vmin=vmin, vmax=vmax, interpolation="nearest")
    return ax


def add_colorbar(fig, axes, vmin: float, vmax: float, label: str, *, cmap: str = "jet", shrink: float = 0.85):
    """One opaque colour bar beside ``axes`` (an Axes or an array of them) for ``cmap`` on ``[vmin, vmax]``.

    The heat maps are drawn half-transparent over the photograph; the bar
    shows their colours at full strength, with the scale's meaning as ``label``.
    """
    from matplotlib.colors import Normalize

    return fig.colorbar(ScalarMappable(Normalize(vmin, vmax), cmap=cmap), ax=axes, shrink=shrink, label=label)


def draw_mask_contour(ax, mask, color="white"):
    """Outline the ground-truth region of ``mask`` ``(H, W)`` (contour at 0.5); returns ``ax``.

    An empty mask (a good image) draws nothing.
    """
    mask = np.asarray(mask, dtype=np.float32)
    if mask.ndim != 2:
        raise ValueError(f"expected a mask (H, W), got shape {mask.shape}")
    if mask.max(initial=0.0) > 0.5:
        contour = ax.contour(mask, levels=[0.5], colors=[color], linewidths=CONTOUR_WIDTH)
        # A thin dark rim keeps a white outline visible on white defects too.
        contour.set(path_effects=[patheffects.withStroke(linewidth=CONTOUR_WIDTH + 1.5,
                                                          foreground="black", alpha=0.8)])
    return ax


# -- the per-image panel ------------------------------------------------------------


def heatmap_panel(image, amap, mask=None, *, title=None, vmin=None, vmax=None,
                  cmap="jet", dpi=72) -> Figure:
    """image | heat-map overlay | ground truth, side by side, as a new ``Figure``.

    * ``image`` ``(3, H, W)`` normalised or ``(H, W, 3)`` in [0, 1];
    * ``amap`` ``(H, W)`` anomaly map, drawn with ``vmin``/``vmax`` (use one
      shared scale for a whole test set, see :func:`shared_scale`) and a colour
      bar;
    * ``mask`` ``(H, W)``: its outline is drawn on the image in the third
      panel (an all-zero mask says "good"). With ``mask=None`` (no ground
      truth, e.g. new images) there are only the first two panels.

    Axes: ``fig.axes`` holds the 2 or 3 panels followed by the colour bar.
    """
    panels = 2 if mask is None else 3
    fig, axes, colorbar_ax = _panel_layout(panels, dpi)
    show_image(axes[0], image)
    axes[0].set_title("image")
    overlay_heatmap(axes[1], image, amap, vmin=vmin, vmax=vmax, cmap=cmap)
    axes[1].set_title("anomaly map")
    if mask is not None:
        show_image(axes[2], image)
        draw_mask_contour(axes[2], mask)
        axes[2].set_title("ground truth" if np.any(mask) else "ground truth: good")
    # The colour bar gets its own opaque mappable: the overlay's is half transparent.
    overlay = axes[1].images[-1]
    colorbar = fig.colorbar(ScalarMappable(norm=overlay.norm, cmap=overlay.get_cmap()), cax=colorbar_ax)
    colorbar.ax.tick_params(labelsize=MIN_FONT_PT)
    colorbar.set_label("anomaly score", fontsize=MIN_FONT_PT)
    if title:
        fig.suptitle(title, fontsize=11)
    return fig


def _panel_layout(panels: int, dpi: int):
    """A figure with ``panels`` square axes in a row and a colour bar, placed in inches.

    Fixed positions (no layout engine) keep every PNG of a run identical in
    layout and make re-drawing cheap; each panel is ``PANEL_INCHES`` square.
    """
    left, gap, bar_gap, bar, right, bottom, top = 0.1, 0.1, 0.15, 0.15, 0.75, 0.1, 0.65
    width = left + panels * PANEL_INCHES + (panels - 1) * gap + bar_gap + bar + right
    height = bottom + PANEL_INCHES + top
    fig = Figure(figsize=(width, height), dpi=dpi)

    def box(x, w):  # inches -> figure fractions
        return [x / width, bottom / height, w / width, PANEL_INCHES / height]

    axes = [fig.add_axes(box(left + i * (PANEL_INCHES + gap), PANEL_INCHES)) for i in range(panels)]
    colorbar_ax = fig.add_axes(box(width - right - bar, bar))
    return fig, axes, colorbar_ax


class PanelWriter:
    """Write many :func:`heatmap_panel` PNGs fast by re-using one figure.

    Building a figure costs far more than drawing into it, so the layout is
    made once and each image only swaps the pixel data, the contour and the
    title before saving (much faster than one figure per image). All
    images share the colour scale ``vmin``/``vmax`` fixed here::

        writer = PanelWriter(vmin, vmax, with_mask=True)
        for image, amap, mask, path in ...:
            writer.save(path, image, amap, mask, title="...")
        writer.close()
    """

    def __init__(self, vmin: float, vmax: float, *, with_mask: bool = True,
                 size: tuple[int, int] = (224, 224), cmap="jet", dpi=72):
        blank = np.zeros((*size, 3), dtype=np.float32)
        mask = np.zeros(size, dtype=bool) if with_mask else None
        self.with_mask = with_mask
        self.fig = heatmap_panel(blank, np.zeros(size), mask, title=" ",
                                 vmin=vmin, vmax=vmax, cmap=cmap, dpi=dpi)
        self.panels = self.fig.axes[: 3 if with_mask else 2]
        self._contour = None

    def save(self, path, image, amap, mask=None, *, title: str = "") -> Path:
        rgb = to_rgb(image)
        image_ax, overlay_ax = self.panels[:2]
        image_ax.images[0].set_data(rgb)
        overlay_ax.images[0].set_data(rgb)
        overlay_ax.images[1].set_data(np.asarray(amap))
        if self.with_mask:
            if mask is None:
                raise ValueError("this PanelWriter draws ground truth: pass a mask")
            truth_ax = self.panels[2]
            truth_ax.images[0].set_data(rgb)
            if self._contour is not None:
                self._contour.remove()
                self._contour = None
            if np.any(mask):
                draw_mask_contour(truth_ax, mask)
                self._contour = truth_ax.collections[-1]
            truth_ax.set_title("ground truth" if np.any(mask) else "ground truth: good")
        self.fig.suptitle(title, fontsize=11)  # re-uses the one suptitle text
        # zlib level 1: PNG encoding is a third of the time at the default 6,
        # for files only ~15% larger.
        return _write_png(self.fig, path, compress_level=1)

    def close(self) -> None:
        self.fig = None


# -- overview of a test set ------------------------------------------------------


def _item_title(item: dict) -> tuple[str, str]:
    """Two title lines and a colour: score, then the true label (red: defective)."""
    label = int(item.get("label", 0))
    truth = "good" if label == 0 else f"defect: {item.get('defect', '?')}"
    return f"score {float(item['score']):.2f}\ntrue: {truth}", ("tab:red" if label else "tab:green")


def overview_grid(items: Sequence[dict], *, title=None, columns=None, dpi=72) -> Figure:
    """A grid of test images with their heat maps and ground-truth outlines.

    Each item is a dict with ``image``, ``amap``, ``mask``, ``score``,
    ``label`` (0 good / 1 defective), ``defect`` and ``category``; optional
    ``vmin``/``vmax`` and ``caption`` (a line above the score).

    Rows are categories, in order of first appearance; within a row the
    items keep their order. Each cell is the image with its map overlaid and
    the true defect outlined, titled with its score and its true label (red
    for defective, green for good). Scores of different categories come from
    different models, so each row has its own colour scale: the items'
    ``vmin``/``vmax`` if given (e.g. the whole test set's), else the range of
    that row's maps.
    """
    if not items:
        raise ValueError("overview_grid needs at least one item")
    rows: dict[str, list[dict]] = {}
    for item in items:
        rows.setdefault(str(item.get("category", "")), []).append(item)
    ncols = columns or max(len(row) for row in rows.values())
    # "constrained" keeps the (multi-line) titles and the suptitle apart.
    fig = Figure(figsize=(2.5 * ncols + 0.4, 2.9 * len(rows) + (0.6 if title else 0.1)), dpi=dpi,
                 layout="constrained")
    axes = np.atleast_2d(fig.subplots(len(rows), ncols, squeeze=False))
    for r, (category, row) in enumerate(rows.items()):
        vmin, vmax = shared_scale(np.stack([np.asarray(i["amap"]) for i in row]))
        for c, ax in enumerate(axes[r]):
            if c >= len(row):
                ax.set_axis_off()
                continue
            item = row[c]
            overlay_heatmap(ax, item["image"], item["amap"],
                            vmin=item.get("vmin", vmin), vmax=item.get("vmax", vmax))
            if item.get("mask") is not None:
                draw_mask_contour(ax, item["mask"])
            text, colour = _item_title(item)
            if item.get("caption"):
                text = f"{item['caption']}\n{text}"
            ax.set_title(text, fontsize=9, color=colour)
        axes[r, 0].set_ylabel(category, fontsize=12, fontweight="bold")
    if title:
        fig.suptitle(title, fontsize=12)
    return fig


# -- the memory bank in 2-D ----------------------------------------------------------


def _shown_rows(num_rows: int, max_points: int, rng) -> np.ndarray:
    """All row indices, or a sorted random ``max_points`` of them."""
    if num_rows <= max_points:
        return np.arange(num_rows)
    return np.sort(rng.choice(num_rows, size=max_points, replace=False))


def fit_bank_pca(features, *, max_points=5000, seed=0):
    """The 2-D PCA that :func:`pca_scatter` draws ``features`` with (same rows, same seed).

    Fit it once and pass it as ``pca_scatter(..., pca=...)`` to redraw a bank
    with many selections without fitting again.
    """
    from sklearn.decomposition import PCA

    features = np.asarray(features, dtype=np.float32)
    shown = _shown_rows(len(features), max_points, np.random.default_rng(seed))
    return PCA(n_components=2, random_state=seed).fit(features[shown])


def pca_scatter(ax, features, selected_indices=None, *, max_points=5000, seed=0, pca=None):
    """2-D PCA of a feature bank ``(N, D)``: grey bank, coloured coreset; returns ``ax``.

    For speed, PCA is fitted on, and the grey dots show, a subsample of at
    most ``max_points`` bank rows drawn with ``numpy.random.default_rng(seed)``
    (the same rows on every call). The ``selected_indices`` (e.g. a coreset)
    are projected with that PCA and drawn on top in colour: all of them, or a
    ``max_points`` subsample (same seed) if there are more. So the grey cloud
    is a sample of the bank while the coloured points are exactly the chosen
    ones, which is what shows how a coreset spreads over the bank. ``pca``:
    the result of :func:`fit_bank_pca` for these features, to skip the fit.
    """
    features = np.asarray(features, dtype=np.float32)
    if features.ndim != 2 or len(features) < 2:
        raise ValueError(f"expected features (N >= 2, D), got shape {features.shape}")
    rng = np.random.default_rng(seed)
    shown = _shown_rows(len(features), max_points, rng)
    if pca is None:
        pca = fit_bank_pca(features, max_points=max_points, seed=seed)
    xy = pca.transform(features[shown])
    ax.scatter(xy[:, 0], xy[:, 1], s=3, c="0.7", linewidths=0, rasterized=True,
               label=f"memory bank ({len(shown)} of {len(features)} shown)")
    if selected_indices is not None:
        selected = np.asarray(selected_indices, dtype=np.int64)
        if len(selected) > max_points:
            selected = np.sort(rng.choice(selected, size=max_points, replace=False))
        picked = pca.transform(features[selected])
        ax.scatter(picked[:, 0], picked[:, 1], s=6, c="tab:red", linewidths=0, rasterized=True,
                   label=f"selected ({len(selected)})")
    ratio = pca.explained_variance_ratio_
    ax.set_xlabel(f"PC 1 ({ratio[0]:.0%} of variance)")
    ax.set_ylabel(f"PC 2 ({ratio[1]:.0%})")
    ax.legend(loc="best", fontsize=MIN_FONT_PT, markerscale=3)
    return ax


# -- files --------------------------------------------------------------------------


def write_overlay(path, image, amap, vmin: float, vmax: float, *, alpha: float = 0.5, cmap: str = "jet") -> Path:
    """A cheap heat map: the image with its map blended over it, one PNG at the input size.

    ``image (H, W, 3)`` in [0, 1] (or a normalised ``(3, H, W)`` tensor),
    ``amap (H, W)`` on the colour scale ``vmin..vmax``. No figure is drawn:
    the colour map is applied to the array and PIL encodes it, about a
    hundred times cheaper than a :class:`PanelWriter` panel.
    """
    from matplotlib import colormaps
    from PIL import Image

    rgb = to_rgb(image)
    level = np.clip((np.asarray(amap, dtype=np.float32) - vmin) / max(vmax - vmin, 1e-12), 0.0, 1.0)
    blend = (1 - alpha) * rgb + alpha * colormaps[cmap](level)[..., :3]
    stream = io.BytesIO()
    Image.fromarray((blend * 255 + 0.5).astype(np.uint8)).save(stream, format="png", compress_level=1)
    return write_file(path, stream.getvalue())


def _write_png(fig, path, compress_level: int = 6) -> Path:
    """Render ``fig`` as PNG, then write it to ``path`` at once (:func:`pcnotes.util.folders.write_file`)."""
    stream = io.BytesIO()
    with warnings.catch_warnings():  # a file name in a script the font lacks: boxes, not a warning per glyph
        warnings.filterwarnings("ignore", message="Glyph .* missing from font")
        fig.savefig(stream, format="png", pil_kwargs={"compress_level": compress_level})
    return write_file(path, stream.getvalue())


def save_figure(fig, path) -> Path:
    """Write ``fig`` as a PNG to ``path`` atomically and close it; returns ``path``.

    The PNG is rendered into a temporary file next to ``path`` and renamed
    over it, so ``path`` is either the old file or the complete new one, never
    half-written. Parent folders are created. The figure is closed afterwards
    (also if it came from ``pyplot``), even when writing fails.
    """
    try:
        return _write_png(fig, path)
    finally:
        import matplotlib.pyplot as plt  # only to release pyplot-managed figures

        plt.close(fig)
