"""The coreset explorer widget: it opens on a defect, draws every update, and never loses input.

The numbers behind it are tested in test_explorer_state.py. Runs on a tiny
generated data set (fabric: 6 training and 11 test images; tiles: 2 and 5).
Updates after the first run in the widget's own thread: each test waits for
them with ``widget.wait``, which returns as soon as the last change is shown.
"""

import io
import threading

import numpy as np
import pytest
from PIL import Image

import pcnotes.app.explorer as explorer
from pcnotes.stages.s5_coreset import coreset_size

pytestmark = pytest.mark.slow  # every test extracts features (seconds)

WAIT_S = 120  # a generous bound for one update on busy cores; wait() returns as soon as it is done


@pytest.fixture(scope="module")
def state(explorer_root):
    return explorer.prepare(explorer_root, neighbours=8)


@pytest.fixture
def fresh_state(state):
    state.clear_caches()
    return state


def settle(widget):
    assert widget.wait(WAIT_S), "the explorer did not finish its updates"
    assert widget.error is None, widget.error


def png_size(png: bytes) -> tuple[int, int]:
    return Image.open(io.BytesIO(png)).size


def test_the_explorer_opens_on_the_defect_that_stands_out_most(fresh_state):
    widget = explorer.build_explorer(fresh_state, ratio=0.01)
    data = fresh_state.data("fabric")
    assert widget.image.value == data.default_image == widget.stats.image_index
    assert widget.image.label == widget.stats.image_label and not widget.image.label.startswith("good/")
    assert widget.stats.mask.any()
    assert "defect outlined" in widget.figure.image_ax.get_title()


def test_the_slider_updates_stats_and_figure(fresh_state):
    widget = explorer.build_explorer(fresh_state, ratio=0.01)
    assert widget.stats.bank_size == 47 and widget.updates == 1
    assert "47 of 4,704 patches" in widget.stats_html.value
    assert widget.plot.value == widget.last_png and png_size(widget.plot.value)[0] > 400
    assert "ready" in widget.status.value
    before_html, before_png = widget.stats_html.value, widget.last_png

    widget.ratio.value = 0.1
    settle(widget)
    assert widget.stats.bank_size == 470 and widget.updates == 2
    assert "470 of 4,704 patches" in widget.stats_html.value and widget.stats_html.value != before_html
    assert widget.last_png != before_png and png_size(widget.plot.value)[1] > 300

    statuses = []
    widget.status.observe(lambda change: statuses.append(change["new"]), names="value")
    widget.sampler.value = "greedy"
    settle(widget)
    assert widget.stats.sampler == "greedy" and "greedy" in widget.stats_html.value
    assert "running the greedy sampler" in statuses[0] and "ready" in statuses[-1]
    widget.image.value = 4
    settle(widget)
    assert widget.stats.image_label == fresh_state.data("fabric").image_labels[4]
    # The curve remembers every bank scored so far, one series per sampler.
    history = fresh_state.history("fabric")
    assert sorted(history) == ["approximate_greedy", "greedy"]
    assert [round(r, 4) for r, _, _ in history["approximate_greedy"]] == [0.01, 0.0999]
    image_line, _ = widget.figure._curves["approximate_greedy"]
    assert np.allclose(image_line.get_xdata(), [0.01, 0.0999], atol=1e-4)


def test_five_quick_steps_end_at_the_fifth_value(fresh_state, monkeypatch):
    """Changes that arrive while an update runs are kept; the latest one wins."""
    widget = explorer.build_explorer(fresh_state, ratio=0.01, sampler="random")
    release, started, seen = threading.Event(), threading.Event(), []
    real_update = explorer.update

    def slow_update(ratio, *args, **kwargs):
        seen.append(round(ratio, 4))
        started.set()
        assert release.wait(WAIT_S)  # the first update runs until all five steps are in
        return real_update(ratio, *args, **kwargs)

    monkeypatch.setattr(explorer, "update", slow_update)
    steps = [0.01 * 10 ** (0.1 * i) for i in range(1, 6)]
    widget.ratio.value = steps[0]
    assert started.wait(WAIT_S)
    for ratio in steps[1:]:  # four more steps while the first is still running
        widget.ratio.value = ratio
        assert not widget.ratio.disabled
    assert "updating" in widget.status.value
    release.set()
    settle(widget)
    assert seen == [round(steps[0], 4), round(steps[-1], 4)], "stacked or dropped, not coalesced"
    assert widget.stats.ratio == pytest.approx(steps[-1])
    assert widget.stats.bank_size == coreset_size(4704, steps[-1]) and widget.updates == 3
    assert "ready" in widget.status.value


def test_changes_from_another_thread_are_all_applied(fresh_state):
    """The kernel delivers front-end changes while an update runs; here a thread plays the kernel."""
    widget = explorer.build_explorer(fresh_state, ratio=0.01, sampler="random")
    steps = [0.01 * 10 ** (0.1 * i) for i in range(1, 6)]

    def press_five_times():
        for ratio in steps:
            widget.ratio.value = ratio

    thread = threading.Thread(target=press_five_times)
    thread.start()
    thread.join(WAIT_S)
    settle(widget)
    assert widget.stats.ratio == pytest.approx(steps[-1])
    assert 2 <= widget.updates <= 6


def test_an_error_is_shown_and_the_next_change_works(fresh_state, monkeypatch):
    widget = explorer.build_explorer(fresh_state, ratio=0.01, sampler="random")
    real_update = explorer.update

    def failing_update(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(explorer, "update", failing_update)
    widget.ratio.value = 0.1
    assert widget.wait(WAIT_S)
    assert isinstance(widget.error, RuntimeError)
    assert "error: RuntimeError: disk full" in widget.status.value and not widget.ratio.disabled
    monkeypatch.setattr(explorer, "update", real_update)
    widget.ratio.value = 0.2
    settle(widget)
    assert widget.stats.bank_size == int(4704 * 0.2) and "ready" in widget.status.value


def test_switching_category_extracts_it_and_opens_its_clearest_defect(fresh_state):
    widget = explorer.build_explorer(fresh_state, ratio=0.01, sampler="random")
    widget.image.value = 6
    settle(widget)
    assert not fresh_state.is_loaded("tiles")
    widget.category.value = "tiles"
    settle(widget)
    tiles = fresh_state.data("tiles")
    assert widget.stats.category == "tiles" and widget.stats.num_train == 2 * 784
    assert [label for label, _ in widget.image.options] == tiles.image_labels
    assert len(widget.image.options) == 5
    assert widget.image.value == widget.stats.image_index == tiles.default_image
    assert tiles.labels[tiles.default_image] == 1


def test_the_figure_reuses_its_axes_and_redraws_what_changed(fresh_state):
    figure = explorer.ExplorerFigure()
    first = explorer.update(0.01, "random", image_index=5, cache=fresh_state)
    figure.draw(first, fresh_state.history("fabric"))
    axes, heat, png = list(figure.fig.axes), figure._heat, figure.png()
    second = explorer.update(0.05, "random", image_index=5, cache=fresh_state)
    figure.draw(second, fresh_state.history("fabric"))
    assert figure.fig.axes == axes and figure._heat is heat  # same image: only its pixels change
    np.testing.assert_array_equal(heat.get_array(), second.amap)
    # One scale for the heat map, its colour bar and the coverage radius, which the bar marks.
    low, high = min(second.map_range[0], second.radius_score), max(second.map_range[1], second.radius_score)
    assert heat.get_clim() == pytest.approx((low, high)) == figure.colorbar.mappable.get_clim()
    assert figure._radius_line.get_ydata()[0] == pytest.approx(second.radius_score)
    assert f"radius r = {second.radius_score:.1f}" in figure.map_ax.get_title()
    assert figure.curve_ax.get_ylim() == pytest.approx((0.5, 1.01))  # a fixed AUROC axis
    assert figure.bank_ax.get_title() == f"memory bank: {second.bank_size:,} of 4,704 patches"
    assert figure.png() != png
    assert figure.fig.axes[4].get_ylabel() == "anomaly score: distance to the bank\n(the features' own space)"
    third = explorer.update(0.05, "random", image_index=8, cache=fresh_state)
    figure.draw(third, fresh_state.history("fabric"))
    assert figure._heat is not heat and third.image_label in figure.image_ax.get_title()
