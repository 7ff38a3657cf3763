"""The coreset-ratio explorer widget: drag a slider, watch what a smaller memory bank costs.

PatchCore keeps a fraction ``ratio`` of all training patches as its memory
bank. A smaller bank is faster to search and to store, but it covers the
normal patches less tightly, and at some point the detector gets worse. This
widget lets a class *see* that trade-off, one slider movement at a time::

    state = prepare()              # extract features once (tens of seconds)
    build_explorer(state)          # the widget

The numbers come from :mod:`pcnotes.app.explorer_state` (features, caches and the
plain function :func:`~pcnotes.app.explorer_state.update`, all tested without a
browser). This module only draws them: :class:`ExplorerFigure` (the bank, the
AUROC curve, the test image and its heat map) and :class:`CoresetExplorer`
(the controls, and the rule that no input is lost).
"""

from __future__ import annotations

import io
import math
import threading
import time

import ipywidgets as widgets
import numpy as np

from pcnotes.stages.s5_coreset import check_ratio
from pcnotes.app.explorer_state import (
    SAMPLER_NAMES,
    CategoryData,
    ExplorerState,
    Stats,
    format_seconds,
    prepare,
    stats_rows,
    update,
)

__all__ = [
    "SAMPLER_NAMES",
    "ExplorerState",
    "Stats",
    "prepare",
    "update",
    "stats_rows",
    "stats_html",
    "ExplorerFigure",
    "CoresetExplorer",
    "build_explorer",
]

SAMPLER_COLOURS = {"random": "tab:orange", "approximate_greedy": "tab:blue", "greedy": "tab:green"}
#: The AUROC axis always spans this much, so that a wiggle of a few pairs looks as small as it is.
AUROC_FLOOR = 0.5
FONT = 10  # points; at the default dpi of 72 the smallest text is 9.5 px (tools/figure_fonts.py)


def stats_html(stats: Stats) -> str:
    """The stats table as HTML for the widget (line heights set: JupyterLab's are for controls)."""
    cell = "text-align:left;vertical-align:top;padding:3px 0;line-height:1.35"
    rows = "".join(
        f"<tr><th style='{cell};padding-right:12px;white-space:nowrap'>{name}</th>"
        f"<td style='{cell}'>{value}</td></tr>"
        for name, value in stats_rows(stats)
    )
    coreset = "from cache" if stats.coreset_cached else ("from a new greedy run" if stats.greedy_ran else "new")
    sources = f"coreset {coreset}, scores {'from cache' if stats.scores_cached else 'new'}"
    return (f"<table style='font-size:13px;border-collapse:collapse'>{rows}</table>"
            f"<div style='color:#666;font-size:12px;line-height:1.35;margin-top:6px'>"
            f"numbers computed in {format_seconds(stats.seconds)} ({sources})</div>")


# --------------------------------------------------------------------------
# The figure
# --------------------------------------------------------------------------


class ExplorerFigure:
    """One figure, re-used for every update: bank scatter, AUROC curve, image, heat map.

    Only what changed is drawn again, into axes made once (a fresh axis
    costs more to render than the data in it): the bank panel's points when
    the bank changes (its PCA is fitted once per category), the test image
    and its outline when the image changes, the heat map's pixels and the
    colour scale for a new bank, and the curve's data. The axes are placed by
    hand, so no layout engine runs per update.

    The heat map's colour bar marks the bank's coverage radius ``r`` on the
    scores' own scale: every training patch lies within ``r`` of the bank, so
    a test patch coloured above the mark is farther from the bank than any
    normal training patch is. The AUROC axis is fixed from 0.5 to 1.
    """

    SIZE = (9.5, 6.8)  # inches: 684 px wide at 72 dpi, under the book's 688-px column

    def __init__(self, dpi: int = 72):
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.cm import ScalarMappable
        from matplotlib.figure import Figure

        width, height = self.SIZE
        self.fig = Figure(figsize=self.SIZE, dpi=dpi)
        FigureCanvasAgg(self.fig)
        self.bank_ax = self.fig.add_axes([0.08, 0.6, 0.38, 0.34])
        self.curve_ax = self.fig.add_axes([0.6, 0.6, 0.37, 0.34])
        side = 0.40  # the two image panels are square: side (of the height) x side * h / w
        self.image_ax = self.fig.add_axes([0.01, 0.04, side * height / width, side])
        self.map_ax = self.fig.add_axes([0.31, 0.04, side * height / width, side])
        colorbar_ax = self.fig.add_axes([0.61, 0.06, 0.014, side - 0.04])
        # One colour bar for the whole test set's scale; the heat map follows the same limits.
        self._scale = ScalarMappable(cmap="jet")
        self._scale.set_clim(0.0, 1.0)
        self.colorbar = self.fig.colorbar(self._scale, cax=colorbar_ax)
        self.colorbar.set_label("anomaly score: distance to the bank\n(the features' own space)", fontsize=FONT)
        colorbar_ax.tick_params(labelsize=FONT)
        # The coverage radius on the same scale: a white line across the bar (its value in the title).
        self._radius_line = colorbar_ax.axhline(0.0, color="white", lw=3)
        self._radius_edge = colorbar_ax.axhline(0.0, color="black", lw=1, ls="--")
        self._setup_curve()
        self._pca: dict[str, object] = {}  # category -> the bank panel's fitted PCA
        self._bank_shown = None  # (category, sampler, M) in the bank panel now
        self._image_shown = None  # (category, image index) in the image panels now
        self._heat = None  # the heat map's AxesImage

    def _setup_curve(self) -> None:
        """The curve panel's axes and lines, made once: updates only set their data."""
        ax = self.curve_ax
        self._curves = {}
        for sampler, colour in SAMPLER_COLOURS.items():
            image, = ax.plot([], [], "o-", color=colour, ms=4)
            pixel, = ax.plot([], [], "s--", color=colour, ms=3, alpha=0.7)
            self._curves[sampler] = (image, pixel)
        self._current, = ax.plot([], [], "o", ms=11, mfc="none", mec="black")
        ax.set_xscale("log")
        ax.set_xlim(7e-4, 1.4)
        ax.set_ylim(AUROC_FLOOR, 1.01)
        ax.set_xlabel("coreset ratio (log scale)", fontsize=FONT)
        ax.set_ylabel("AUROC on the test set", fontsize=FONT)
        ax.set_title("AUROC against ratio, as you explore", fontsize=11)
        ax.grid(True, which="major", alpha=0.3)
        self._legend_samplers = None  # the samplers the legend lists now

    def _draw_legend(self, samplers: list[str]) -> None:
        """The curve's legend, for the samplers on it (redrawn only when a sampler joins)."""
        from matplotlib.lines import Line2D

        for legend in list(self.fig.legends):
            legend.remove()
        labels = {v: k for k, v in SAMPLER_NAMES.items()}
        handles = [Line2D([], [], color=SAMPLER_COLOURS[s], lw=6, label=labels[s]) for s in samplers]
        handles += [Line2D([], [], color="0.3", marker="o", ms=4, label="image AUROC"),
                    Line2D([], [], color="0.3", marker="s", ms=3, ls="--", label="pixel AUROC"),
                    Line2D([], [], color="black", marker="o", ms=11, mfc="none", ls="",
                           label="current setting")]
        # The legend sits in the free corner under the curve.
        self.fig.legend(handles=handles, loc="center", bbox_to_anchor=(0.84, 0.25), fontsize=FONT,
                        frameon=False, title="curve", title_fontsize=FONT)
        self._legend_samplers = samplers

    def draw(self, stats: Stats, history: dict | None = None):
        """Bring every panel up to date with ``stats``; ``history`` as :meth:`ExplorerState.history`."""
        from pcnotes.app.plots import draw_mask_contour, fit_bank_pca, overlay_heatmap, pca_scatter, show_image

        bank = (stats.category, stats.sampler, stats.bank_size)
        if bank != self._bank_shown:
            if stats.category not in self._pca:
                self._pca[stats.category] = fit_bank_pca(stats.train_features)
            if self._bank_shown is None or stats.category != self._bank_shown[0]:
                self.bank_ax.cla()  # another category's cloud: new limits
            for artist in [*self.bank_ax.collections, self.bank_ax.get_legend()]:
                if artist is not None:  # the same cloud: only the points and the legend change
                    artist.remove()
            pca_scatter(self.bank_ax, stats.train_features, stats.indices, pca=self._pca[stats.category])
            self.bank_ax.set_title(f"memory bank: {stats.bank_size:,} of {stats.num_train:,} patches",
                                   fontsize=11)
            self.bank_ax.legend(loc="best", fontsize=FONT, markerscale=3)
            self.bank_ax.xaxis.label.set_fontsize(FONT)
            self.bank_ax.yaxis.label.set_fontsize(FONT)
            self._bank_shown = bank

        # One scale for the whole test set, wide enough to hold the coverage radius.
        vmin, vmax = min(stats.map_range[0], stats.radius_score), max(stats.map_range[1], stats.radius_score)
        image = (stats.category, stats.image_index)
        if image != self._image_shown:
            for ax in (self.image_ax, self.map_ax):
                ax.cla()
            show_image(self.image_ax, stats.image)
            draw_mask_contour(self.image_ax, stats.mask)
            truth = "good" if not stats.mask.any() else "defect outlined"
            self.image_ax.set_title(f"{stats.image_label}\n({truth})", fontsize=FONT)
            overlay_heatmap(self.map_ax, stats.image, stats.amap, vmin=vmin, vmax=vmax)
            self._heat = self.map_ax.images[-1]
            draw_mask_contour(self.map_ax, stats.mask)
            self._image_shown = image
        else:
            self._heat.set_data(stats.amap)
        self._heat.set_clim(vmin, vmax)
        self._scale.set_clim(vmin, vmax)
        for line in (self._radius_line, self._radius_edge):
            line.set_ydata([stats.radius_score] * 2)
        self.map_ax.set_title(f"anomaly map, image score {stats.image_score:.1f}\n"
                              f"white line on the bar: radius r = {stats.radius_score:.1f}", fontsize=FONT)
        self._update_curve(stats, history or {})
        return self.fig

    def _update_curve(self, stats: Stats, history: dict) -> None:
        for sampler, (image_line, pixel_line) in self._curves.items():
            ratios, image, pixel = np.array(history.get(sampler) or np.empty((0, 3))).reshape(-1, 3).T
            image_line.set_data(ratios, image)
            pixel_line.set_data(ratios, pixel)
        self._current.set_data([stats.effective_ratio] * 2, [stats.image_auroc, stats.pixel_auroc])
        values = [v for points in history.values() for p in points for v in p[1:]]
        low = min(values + [stats.image_auroc, stats.pixel_auroc, AUROC_FLOOR])
        self.curve_ax.set_ylim(math.floor(low * 20) / 20, 1.01)  # 0.5 to 1, lower only below 0.5
        samplers = [sampler for sampler in SAMPLER_COLOURS if history.get(sampler)]
        if samplers != self._legend_samplers:
            self._draw_legend(samplers)

    def png(self) -> bytes:
        buffer = io.BytesIO()
        # zlib level 1: a third of the encoding time, files a little larger.
        self.fig.savefig(buffer, format="png", pil_kwargs={"compress_level": 1})
        return buffer.getvalue()


# --------------------------------------------------------------------------
# The widget
# --------------------------------------------------------------------------


class CoresetExplorer(widgets.VBox):
    """Controls, a stats table and the figure; made by :func:`build_explorer`.

    Attributes for tests and notebooks: ``ratio`` (FloatLogSlider),
    ``sampler``, ``category``, ``image`` (Dropdowns), ``status`` and
    ``stats_html`` (HTML), ``plot`` (Image), ``stats`` (the last
    :class:`Stats`), ``updates`` (how many updates ran), ``error`` (the
    exception of the last update, or None).

    No input is lost. The first update runs when the widget is made; later
    ones run in a thread of their own, so the kernel keeps receiving the
    controls' changes while an update runs, and the controls stay enabled.
    A change that arrives during an update is kept (only the latest one), and
    when the running update is done, one more runs with the latest values.
    :meth:`wait` blocks until every change has been shown.
    """

    def __init__(self, state: ExplorerState, *, ratio: float = 0.01,
                 sampler: str = "approximate_greedy", category: str | None = None,
                 image_index: int | None = None, dpi: int = 72):
        self.state = state
        data = state.data(category)
        narrow, wide = {"description_width": "75px"}, {"description_width": "95px"}
        self.ratio = widgets.FloatLogSlider(
            value=check_ratio(ratio), base=10, min=-3, max=0, step=0.1,
            description="coreset ratio", readout_format=".4f", continuous_update=False,
            style=wide, layout=widgets.Layout(width="430px"))
        self.sampler = widgets.Dropdown(
            options=list(SAMPLER_NAMES.items()), value=sampler, description="sampler",
            style=narrow, layout=widgets.Layout(width="300px"))
        self.category = widgets.Dropdown(
            options=state.categories, value=data.name, description="category",
            style=wide, layout=widgets.Layout(width="430px"))
        self.image = widgets.Dropdown(
            options=self._image_options(data),
            value=data.default_image if image_index is None else image_index,
            description="test image", style=narrow, layout=widgets.Layout(width="300px"))
        self.status = widgets.HTML(layout=widgets.Layout(margin="0 0 0 12px"))
        self.stats_html = widgets.HTML(layout=widgets.Layout(width="350px", margin="6px 16px 0 4px"))
        self.plot = widgets.Image(format="png")
        # CSS classes, so that a browser test can find each part.
        for widget, name in [(self.ratio, "ratio"), (self.sampler, "sampler"),
                             (self.category, "category"), (self.image, "image"),
                             (self.status, "status"), (self.stats_html, "stats"), (self.plot, "plot")]:
            widget.add_class(f"pcnotes-explorer-{name}")
        self.figure = ExplorerFigure(dpi=dpi)
        self.stats: Stats | None = None
        self.last_png: bytes | None = None
        self.updates = 0
        self.error: Exception | None = None
        self._options_category = data.name  # whose test images the image picker lists
        self._muted = False  # True while the widget itself sets the image picker
        self._lock = threading.Lock()
        self._wanted: tuple | None = None  # the latest request not yet taken up
        self._worker: threading.Thread | None = None
        self._idle = threading.Event()
        self._shown: tuple | None = None  # the request on screen
        self._seconds = 0.0
        super().__init__([
            widgets.HBox([self.ratio, self.sampler, self.status],
                         layout=widgets.Layout(align_items="center")),
            widgets.HBox([self.category, self.image]),
            # wraps: on a narrow screen the figure goes below the table
            widgets.HBox([self.stats_html, self.plot], layout=widgets.Layout(flex_flow="row wrap")),
        ])
        self.add_class("pcnotes-explorer")
        self._run(self._requested())
        self._show_idle()
        self._idle.set()
        if self.error is not None:
            raise self.error
        self.category.observe(self._on_category, names="value")
        for control in (self.ratio, self.sampler, self.image):
            control.observe(self._on_change, names="value")

    @staticmethod
    def _image_options(data: CategoryData) -> list[tuple[str, int]]:
        return [(label, i) for i, label in enumerate(data.image_labels)]

    def _requested(self) -> tuple:
        return (self.ratio.value, self.sampler.value, self.category.value, self.image.value)

    def _on_category(self, change) -> None:
        # Another test set: it opens on its own default image (None until it is loaded).
        self._request((self.ratio.value, self.sampler.value, change["new"], None))

    def _on_change(self, change=None) -> None:
        if not self._muted:
            self._request(self._requested())

    def _request(self, request: tuple) -> None:
        """Remember the latest wish; start the update thread unless it runs already."""
        with self._lock:
            self._wanted = request
            if self._worker is None:
                self._idle.clear()
                self._worker = threading.Thread(target=self._work, name="coreset-explorer", daemon=True)
                self._worker.start()

    def _work(self) -> None:
        while True:
            with self._lock:
                request, self._wanted = self._wanted, None
                if request is None:  # nothing new arrived during the last update
                    self._worker = None
                    self._show_idle()
                    self._idle.set()
                    return
            if request != self._shown:
                self._run(request)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until every change so far is shown; False if ``timeout`` seconds passed first."""
        return self._idle.wait(timeout)

    def _show_busy(self, message: str) -> None:
        self.status.value = f"<span style='color:#b45309'>&#8987; {message}</span>"

    def _show_idle(self) -> None:
        if self.error is not None:
            text = f"{type(self.error).__name__}: {self.error}"
            self.status.value = f"<span style='color:#b91c1c'>error: {text}</span>"
        else:
            self.status.value = (f"<span style='color:#15803d'>&#10003; ready "
                                 f"({format_seconds(self._seconds)})</span>")

    def _run(self, request: tuple) -> None:
        """Compute, draw and show one request; an error is kept in ``error`` and shown."""
        ratio, sampler, category, image_index = request
        start = time.perf_counter()
        if not self.state.is_loaded(category):
            self._show_busy(f"extracting {category} features and building its neighbour "
                            "table (once per category)…")
        elif self.state.will_run_sampler(category, sampler, ratio):
            label = {v: k for k, v in SAMPLER_NAMES.items()}[sampler]
            self._show_busy(f"running the {label} sampler (once; smaller ratios reuse its picks)…")
        else:
            self._show_busy("updating…")
        try:
            if category != self._options_category or image_index is None:
                data = self.state.data(category)
                image_index = data.default_image
                self._show_images_of(data, image_index)
                request = (ratio, sampler, category, image_index)
            stats = update(ratio, sampler, category, image_index, cache=self.state)
            self.figure.draw(stats, self.state.history(category))
            png = self.figure.png()
        except Exception as error:  # shown in the status; the next change may succeed
            self.error = error
            return
        self.error = None
        self.stats, self.last_png, self._shown = stats, png, request
        self.stats_html.value = stats_html(stats)
        self.plot.value = png
        self.updates += 1
        self._seconds = time.perf_counter() - start

    def _show_images_of(self, data: CategoryData, image_index: int) -> None:
        """List the category's test images in the picker, with ``image_index`` chosen."""
        self._muted = True
        try:
            self.image.options = self._image_options(data)
            self.image.value = image_index
        finally:
            self._muted = False
        self._options_category = data.name


def build_explorer(state: ExplorerState, *, ratio: float = 0.01, sampler: str = "approximate_greedy",
                   category: str | None = None, image_index: int | None = None,
                   dpi: int = 72) -> CoresetExplorer:
    """The explorer widget (an ``ipywidgets.VBox``), already showing its first update.

    It opens on ``image_index``, by default the category's defect that stands
    out most from its background (:func:`pcnotes.app.explorer_state.defect_contrast`). Its controls and views are attributes: ``ratio``,
    ``sampler``, ``category``, ``image``, ``status``, ``stats_html``, ``plot``.
    """
    return CoresetExplorer(state, ratio=ratio, sampler=sampler, category=category,
                           image_index=image_index, dpi=dpi)
