"""``python -m pcnotes``: evaluate, fit, predict, demo and course from the command line.

The command line is a contract: scripts outside this repository call it on
their own data sets in the MVTec AD layout, so its options, files and exit
codes stay stable.

* exit 0 on success;
* exit 2 on a usage error: an option whose value is wrong in itself or for
  the data it meets (``--seed -1``, ``--layers ''``, ``--reweight`` larger
  than the memory bank that ``--coreset-ratio`` gives), with one line
  ``error: ...`` naming the option;
* exit 1 on a data or model problem (a missing, unreadable or inconsistent
  file or folder, a full disk, an output folder that may not be replaced),
  with one line ``error: <reason>`` on stderr naming the file or folder;
* ``--debug`` adds the traceback; Ctrl-C, SIGTERM and SIGHUP exit with
  128 + the signal's number after cleaning up.

Everything that can be checked is checked before the fit: the options, the
output folder, every image and mask. Warnings (a mask that is not binary) are
one line each, ``warning: ...``.

Nothing half-written is left behind and no user file is ever replaced: every
command writes through :func:`pcnotes.util.folders.replace_folder` (a staging
sibling, renamed into place only when complete; an existing folder only if
it is an earlier output of the same command, proven by pcnotes' marker file).

Heavy imports (torch, faiss, matplotlib) happen inside the commands, so that
``--help`` answers at once.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import hashlib
import json
import math
import os
import signal
import statistics
import sys
import traceback
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

from pcnotes.util import folders  # standard library only
from pcnotes.util.paths import printable

# Kept here (not imported from pcnotes.stages.s5_coreset / pcnotes.stages.s1_features) so that
# --help does not import torch; tests/test_cli.py checks they match.
SAMPLERS = ("approximate_greedy", "greedy", "random")
BACKBONES = ("mobilenet_v2", "wide_resnet50_2", "resnet18")
PATCH_FEATURES = ("mean_mapped", "pooled_concat")
TARGET_AUROC = 0.95  # the demo's per-category target for image and pixel AUROC
TOP_PANELS = 10  # evaluate draws full panels for this many highest-scored test images

#: The errors a user can cause with their data or model; anything else is a bug
#: and keeps its traceback.
USER_ERRORS = (ValueError, FileNotFoundError, RuntimeError, OSError)  # DataError is a ValueError


class UsageError(ValueError):
    """A bad option value found by a command (exit 2, like argparse's own errors)."""


# -- argument types ----------------------------------------------------------------


def coreset_ratio(text: str) -> float:
    """argparse type: a number in (0, 1], checked by :func:`pcnotes.stages.s5_coreset.check_ratio`."""
    from pcnotes.stages.s5_coreset import check_ratio  # imported here, so that --help does not import torch

    try:
        return check_ratio(float(text))
    except ValueError:  # also "ten" and "nan"
        raise argparse.ArgumentTypeError(
            f"must be a number in (0, 1] (the fraction of patches kept in the memory bank), got {text!r}"
        ) from None


def image_size(text: str) -> int | tuple[int, int]:
    """argparse type: ``N`` or ``HxW`` (height x width), positive integers."""
    parts = text.lower().split("x")
    if len(parts) in (1, 2) and all(part.strip().isdigit() and int(part) > 0 for part in parts):
        sizes = tuple(int(part) for part in parts)
        return sizes[0] if len(sizes) == 1 else sizes
    raise argparse.ArgumentTypeError(f"expected N or HxW (height x width), e.g. 224 or 256x608; got {text!r}")


def crop_size(text: str) -> int | tuple[int, int] | str:
    """argparse type: like :func:`image_size`, or ``none`` for no crop."""
    return "none" if text.strip().lower() == "none" else image_size(text)


def _int_at_least(minimum: int, what: str):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{what} must be >= {minimum}, got {value}")
        return value

    return parse


# -- the parser ----------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line: ``error: ...``, exit 2."""

    argv: Sequence[str] = ()  # the arguments being parsed, for the hint below

    def error(self, message: str):
        self.exit(2, f"error: {self.prog}: {message}{_dash_hint(self.argv)} (see '{self.prog} --help')\n")


def _dash_hint(argv: Sequence[str]) -> str:
    """A file whose name starts with '-' reads as an option: say how to pass it."""
    files = [arg for arg in argv if arg.startswith("-") and arg != "-" and os.path.exists(arg)]
    if not files:
        return ""
    return f"; {files[0]} is a file, not an option: write ./{files[0]}, or put -- before the file names"


class _Formatter(argparse.RawDescriptionHelpFormatter):
    def __init__(self, prog):
        super().__init__(prog, max_help_position=32)


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model options (saved with the model)")
    group.add_argument("--backbone", default="mobilenet_v2", choices=BACKBONES,
                       help="feature extractor (default: %(default)s, whose ImageNet weights ship "
                            "with pcnotes; the ResNets need torchvision's cache or internet)")
    group.add_argument("--weights", default="imagenet", metavar="imagenet|random|PATH",
                       help="backbone weights: 'imagenet', seeded 'random', or a state_dict file "
                            "(default: %(default)s)")
    group.add_argument("--layers", nargs="+", default=None, metavar="LAYER",
                       help="layers to take features from (default: the backbone's stride-8 and "
                            "stride-16 layers, e.g. features.6 features.13 for mobilenet_v2)")
    group.add_argument("--patch-feature", default=None, choices=PATCH_FEATURES,
                       help="one vector per patch: 'mean_mapped' (the reference's mean mappers + "
                            "aggregator, 1024-d) or 'pooled_concat' (3x3 average pool per layer, "
                            "channels concatenated: 128-d for mobilenet_v2) (default: the "
                            "backbone's: pooled_concat for mobilenet_v2, mean_mapped for the ResNets)")
    group.add_argument("--resize", type=image_size, default=None, metavar="N|HxW",
                       help="resize the shorter side to N, or every image to exactly H x W "
                            "(height x width) (default: from the training images: square ones "
                            "256 with a centre crop of 224; others the whole image at their median "
                            "aspect ratio, shorter side 256, sides multiples of 16)")
    group.add_argument("--crop", type=crop_size, default=None, metavar="N|HxW|none",
                       help="centre crop N x N or H x W; 'none' keeps the whole resized image "
                            "(default: 224 with --resize N, none with --resize HxW: the whole-"
                            "image mode for non-square photographs)")
    group.add_argument("--index", default="exact", choices=("exact", "hnsw"),
                       help="nearest-neighbour search: 'exact' (faiss flat) or 'hnsw' (approximate: "
                            "recall@1 0.95-1; faster, its build counted, from about 20,000 memory bank "
                            "entries with 100 test images; see benchmarks/results/ann.md) (default: %(default)s)")
    group.add_argument("--coreset-ratio", type=coreset_ratio, default=0.1, metavar="R",
                       help="fraction of training patches kept in the memory bank, in (0, 1] "
                            "(default: %(default)s)")
    group.add_argument("--sampler", default="approximate_greedy", choices=SAMPLERS,
                       help="how the coreset is chosen (default: %(default)s)")
    group.add_argument("--num-neighbors", type=_int_at_least(1, "--num-neighbors"), default=1,
                       metavar="K", help="k nearest memory-bank patches averaged per patch score "
                                         "(default: %(default)s)")
    group.add_argument("--reweight", type=_int_at_least(0, "--reweight"), default=0, metavar="B",
                       help="b of the paper's eq. 7 image-score re-weighting; 0 = off, the plain "
                            "maximum patch score (default: %(default)s)")
    group.add_argument("--seed", type=int, default=0,
                       help="seed for the coreset (and random weights) (default: %(default)s)")


def _add_force(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--force", action="store_true",
                        help=f"replace {what} even when files in it were changed since pcnotes wrote them "
                             "(an earlier output is otherwise replaced only as pcnotes left it; files that "
                             "operating systems add, .DS_Store, ._*, Thumbs.db, desktop.ini, are ignored)")


def _add_heatmap_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--heatmaps", default="overlay", choices=("overlay", "panels", "none"),
                        help="per test image: 'overlay' (the image with its map blended in, cheap), "
                             "'panels' (image | map | ground truth with a colour bar, slow on "
                             "big test sets) or 'none'; the top-scored images always get panels "
                             "(default: %(default)s)")


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--debug", action="store_true",
                        help="on failure, print the full traceback as well")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="pcnotes",
        formatter_class=_Formatter,
        description="PatchCore anomaly detection (Roth et al., CVPR 2022) on data sets in the "
                    "MVTec AD layout:\n\n"
                    "  ROOT/CATEGORY/train/good/*.png            normal training images\n"
                    "  ROOT/CATEGORY/test/good|DEFECT/*.png      test images\n"
                    "  ROOT/CATEGORY/ground_truth/DEFECT/NAME_mask.png\n",
        epilog="examples:\n"
               "  python -m pcnotes demo\n"
               "  python -m pcnotes evaluate --data-root /data/mvtec --category bottle\n"
               "  python -m pcnotes fit --train-dir /data/mvtec/bottle/train/good --model models/bottle\n"
               "  python -m pcnotes predict --model models/bottle new/*.png --output runs/new\n"
               "  python -m pcnotes course my_course       # the course's notebooks, exercises to do\n\n"
               "Exit status: 0 success, 1 data/model error, 2 usage error; errors are one line "
               "'error: ...' on stderr.\n"
               "Run 'python -m pcnotes COMMAND --help' for a command's options and outputs.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True,
                                     parser_class=_Parser)

    evaluate = commands.add_parser(
        "evaluate", formatter_class=_Formatter,
        help="fit on a category's train/good, score its test set, write metrics and heat maps",
        description="Fit PatchCore on ROOT/CATEGORY/train/good, score ROOT/CATEGORY/test and write\n\n"
                    "  OUTPUT/metrics.json                image_auroc, pixel_auroc, aupro, n_train, n_test,\n"
                    "                                     memory_bank_size, fit_seconds, predict_seconds,\n"
                    "                                     backbone, weights, and the config (one flat object)\n"
                    "  OUTPUT/heatmaps/DEFECT_NAME.png    per test image, as it is scored: the image with its\n"
                    "                                     anomaly map blended in (--heatmaps panels: image |\n"
                    "                                     map | ground truth), on one colour scale: the first\n"
                    "                                     scored batch's min..max (good images come first)\n"
                    f"  OUTPUT/top/NN_DEFECT_NAME.png     the {TOP_PANELS} highest-scored images: image | map |\n"
                    "                                     ground truth, on the test set's min..max\n\n"
                    "It prints the image size, the weights loaded, a table of the metrics and one of\n"
                    "where the time went. An existing OUTPUT from an earlier evaluate is replaced\n"
                    "only when the run succeeds.",
    )
    evaluate.add_argument("--data-root", type=Path, default=None, metavar="ROOT",
                          help="data set in the MVTec AD layout (default: the embedded synthetic "
                               "set in $PCNOTES_DATA, a clone's data/synthetic or the user data folder, "
                               "generated on first use)")
    evaluate.add_argument("--category", required=True, help="category folder under ROOT")
    evaluate.add_argument("--output", type=Path, default=None, metavar="DIR",
                          help="output folder (default: runs/CATEGORY-HASH, HASH the first 8 hex digits of "
                               "the sha256 of the category folder's full path, so that categories of the "
                               "same name in other data sets never share an output)")
    _add_force(evaluate, "an earlier evaluate output")
    _add_heatmap_option(evaluate)
    _add_model_options(evaluate)
    _add_common(evaluate)
    evaluate.set_defaults(run=cmd_evaluate)

    fit = commands.add_parser(
        "fit", formatter_class=_Formatter,
        help="build a memory bank from a folder of good images and save the model",
        description="Fit PatchCore on every image in a folder of normal images (not recursive)\n"
                    "and save the model as MODEL/config.json + MODEL/memory_bank.npy.\n"
                    "An existing saved model at MODEL is replaced only when the fit succeeds.",
    )
    fit.add_argument("--train-dir", type=Path, required=True, metavar="DIR",
                     help="folder of good images, e.g. ROOT/CATEGORY/train/good")
    fit.add_argument("--model", type=Path, required=True, metavar="MODEL",
                     help="folder to save the model in")
    _add_force(fit, "an earlier saved model")
    _add_model_options(fit)
    _add_common(fit)
    fit.set_defaults(run=cmd_fit)

    predict = commands.add_parser(
        "predict", formatter_class=_Formatter,
        help="score images with a saved model; write scores.csv and heat maps",
        description="Score images with a model saved by 'fit', using the model's own transform\n"
                    "(resize, centre crop, mean/std), and write\n\n"
                    "  OUTPUT/scores.csv      columns path,score; one row per image, in the given order\n"
                    "  OUTPUT/STEM.png        per image: image | anomaly map (a repeated stem gets _2, _3 ...)\n\n"
                    "The heat maps of one call share one colour scale: min..max over all given\n"
                    "images, unless --vmin/--vmax fix it (to compare the maps of several calls).",
    )
    predict.add_argument("--model", type=Path, required=True, metavar="MODEL",
                         help="folder written by 'pcnotes fit'")
    predict.add_argument("images", nargs="+", type=Path, metavar="IMAGE",
                         help="image files, or folders (their images, sorted by name)")
    predict.add_argument("--output", type=Path, required=True, metavar="DIR", help="output folder")
    predict.add_argument("--vmin", type=float, default=None,
                         help="low end of the colour scale (alone: it must lie below the highest map value)")
    predict.add_argument("--vmax", type=float, default=None,
                         help="high end of the colour scale (alone: it must lie above the lowest map value)")
    _add_force(predict, "an earlier predict output")
    _add_common(predict)
    predict.set_defaults(run=cmd_predict)

    demo = commands.add_parser(
        "demo", formatter_class=_Formatter,
        help="evaluate every category of the embedded data set (what 'make demo' runs)",
        description="Make sure the embedded synthetic data set exists, evaluate every category in\n"
                    "it with the default model, and write\n\n"
                    "  OUTPUT/CATEGORY/metrics.json, OUTPUT/CATEGORY/heatmaps/*.png   as 'evaluate' does\n"
                    "  OUTPUT/metrics.csv     one row per category\n"
                    "  OUTPUT/overview.png    per category the highest- and lowest-scored test images\n\n"
                    f"It prints a table per category and whether image and pixel AUROC reach\n"
                    f"the target of {TARGET_AUROC} (a measurement: the exit status stays 0 below it),\n"
                    "and the overview's path as the last line.",
    )
    demo.add_argument("--data-root", type=Path, default=None, metavar="ROOT",
                      help="evaluate this MVTec-layout data set instead of the embedded one")
    demo.add_argument("--output", type=Path, default=Path("runs/demo"), metavar="DIR",
                      help="output folder (default: %(default)s)")
    _add_force(demo, "an earlier demo output")
    _add_heatmap_option(demo)
    _add_model_options(demo)
    _add_common(demo)
    demo.set_defaults(run=cmd_demo)

    course = commands.add_parser(
        "course", formatter_class=_Formatter,
        help="write the course's notebooks into a folder: the learner edition, or the solutions",
        description="Write the course's notebooks into DIR, from the solution notebooks that ship\n"
                    "with pcnotes (in a clone: its notebooks/):\n\n"
                    "  DIR/NN_topic.ipynb, DIR/deeper/NN_topic.ipynb   the learner edition: every exercise\n"
                    "                         a stub raising NotImplementedError, the checker cells kept,\n"
                    "                         no outputs (with --solutions: the executed solutions)\n"
                    "  DIR/README.md          what the folder holds\n"
                    "  DIR/.generated.json    what was written, so a rerun can tell a learner's changes\n\n"
                    "Every notebook is checked before anything is written. A notebook in DIR that\n"
                    "was changed since pcnotes wrote it (or that pcnotes did not write) is never\n"
                    "overwritten: it is named and the exit status is 2, unless --force.\n"
                    "Then open DIR/00_setup.ipynb in Jupyter.",
    )
    course.add_argument("folder", type=Path, metavar="DIR", help="where the notebooks go (made if missing)")
    course.add_argument("--solutions", action="store_true",
                        help="write the executed solution notebooks instead of the learner edition")
    course.add_argument("--force", action="store_true",
                        help="overwrite notebooks in DIR that were changed since pcnotes wrote them")
    _add_common(course)
    course.set_defaults(run=cmd_course)
    return parser


# -- entry point ----------------------------------------------------------------------


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def _as_usage_error(error: BaseException) -> str | None:
    """The message of a bad option value, or ``None`` for a data or model problem."""
    if isinstance(error, UsageError):
        return _one_line(error)
    # A ConfigError can only come from pcnotes.model, imported by then; looking
    # it up in sys.modules keeps torch out of --help.
    model = sys.modules.get("pcnotes.model")
    if model is not None and isinstance(error, model.ConfigError):
        return f"--{error.name.replace('_', '-')} {_one_line(error.problem)}"
    return None


@contextlib.contextmanager
def _warnings_as_lines() -> Iterator[None]:
    """pcnotes' own warnings as one line each, ``warning: ...``, each message once."""
    shown = set()
    previous = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if not category.__module__.startswith("pcnotes"):
            return previous(message, category, filename, lineno, file, line)
        text = _one_line(message)
        if text not in shown:
            shown.add(text)
            print(f"warning: {text}", file=sys.stderr, flush=True)

    with warnings.catch_warnings():
        # every warning pcnotes raises is shown (show() prints each text once); other
        # modules' warnings keep Python's filters, which hide e.g. a ResourceWarning
        # from an import that a signal cut short
        warnings.filterwarnings("always", module=r"pcnotes(\.|$)")
        warnings.showwarning = show
        yield


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the exit status (0 ok, 1 data/model error, 2 usage error)."""
    parser = build_parser()
    argv = [str(arg) for arg in (sys.argv[1:] if argv is None else argv)]
    _Parser.argv = argv
    try:
        args = parser.parse_args(argv)
    except SystemExit as stop:  # --help (0) or a usage error (2)
        return stop.code if isinstance(stop.code, int) else 0
    try:
        with folders.interrupts_on_signals(), _warnings_as_lines():
            return args.run(args)
    except USER_ERRORS as error:
        if args.debug:
            traceback.print_exc()
        usage = _as_usage_error(error)
        print(f"error: {usage or _one_line(error)}", file=sys.stderr)
        return 1 if usage is None else 2
    except KeyboardInterrupt as stop:  # Ctrl-C, or SIGTERM / SIGHUP (folders.Interrupted)
        signum = getattr(stop, "signum", signal.SIGINT)
        print(f"error: interrupted by {signal.Signals(signum).name} (nothing half-written was left)",
              file=sys.stderr)
        return 128 + signum


# -- shared pieces ------------------------------------------------------------------------


def _config(args, train_paths: Sequence[Path] = ()):
    """The model's config from the options, and the training images' sizes where they chose the image size.

    Returns ``(config, sizes)``: ``sizes`` are the ``(width, height)`` of ``train_paths``, every
    file read once (:func:`photo_sizes`), or ``None`` when ``--resize``/``--crop`` decide.
    """
    from pcnotes.config import PatchCoreConfig
    from pcnotes.data.mvtec import default_image_size, photo_sizes

    sizes = None
    if args.resize is None and args.crop is None and train_paths:
        sizes = photo_sizes(train_paths)
        resize, crop = default_image_size(sizes)
    else:
        resize = 256 if args.resize is None else args.resize
        if args.crop is None:  # not given: the reference's 224, or no crop after --resize HxW
            crop = 224 if isinstance(resize, int) else None
        else:
            crop = None if args.crop == "none" else args.crop
    config = PatchCoreConfig(
        backbone=args.backbone, weights=args.weights, layers=tuple(args.layers or ()),
        patch_feature=args.patch_feature or "", resize=resize, crop=crop,
        coreset_ratio=args.coreset_ratio, sampler=args.sampler, num_neighbors=args.num_neighbors,
        reweight=args.reweight, seed=args.seed, index=args.index,
    )
    return config, sizes


def _print_size(args, config, sizes) -> None:
    """One line: the image size chosen, and why (``sizes``: what :func:`_config` returned)."""
    if args.resize is not None or args.crop is not None:
        why = "from --resize/--crop"
    elif config.crop is not None:
        why = "square training images"
    else:
        aspects = [w / h for w, h in sizes]
        why = f"median width/height {statistics.median(aspects):.2f} of {len(aspects)} training images"
    print(f"image size: {_size_text(config)} ({why}; --resize/--crop override)", flush=True)


def _size_text(config) -> str:
    def text(size):
        return str(size) if isinstance(size, int) else f"{size[0]}x{size[1]}"

    if config.crop is None:
        return f"{text(config.resize)}, the whole image"
    return f"resize {text(config.resize)}, centre crop {text(config.crop)}"


def _data_root(args) -> Path:
    if args.data_root is not None:
        return args.data_root
    from pcnotes.data.synth import ensure_default_dataset

    print("using the embedded synthetic data set (generated on first use)", flush=True)
    return ensure_default_dataset()


def _json_number(value):
    """NaN (e.g. AUROC of a test set with one class) is not valid JSON: write null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _print_table(rows: Sequence[tuple[str, object]]) -> None:
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        shown = f"{value:.4f}" if isinstance(value, float) else str(value)
        print(f"  {name:<{width}}  {shown}")


class _HeatMaps:
    """Writes each scored test batch's heat maps (``on_batch`` of :func:`evaluate_category`).

    Keeps only the ``top`` highest- and ``low`` lowest-scored items (for the
    top panels and the demo's overview), so memory does not grow with the test set.
    """

    def __init__(self, out: Path, category: str, test, config, mode: str, top: int, low: int):
        from pcnotes.app import plots as viz

        self.viz, self.out, self.category, self.config, self.mode = viz, out, category, config, mode
        self.defects, self.paths, self.labels = test.defects, test.paths, test.labels
        self.names = unique_names([f"{d}_{Path(p).stem}" for d, p in zip(self.defects, self.paths)])
        self.top, self.low = top, low
        self.kept: list[dict] = []
        self.scale = self.writer = None
        self.seconds = 0.0

    def __call__(self, batch) -> None:
        import time

        start = time.perf_counter()
        if self.scale is None:
            self.scale = float(batch.maps.min()), float(batch.maps.max())
            if self.mode == "panels":
                self.writer = self.viz.PanelWriter(*self.scale, with_mask=True, size=batch.maps.shape[1:])
        for j, (image, amap, mask, score) in enumerate(zip(batch.images, batch.maps, batch.masks, batch.scores)):
            i = batch.first + j
            rgb = self.viz.to_rgb(image, self.config.mean, self.config.std)
            path = self.out / "heatmaps" / f"{self.names[i]}.png"
            if self.mode == "overlay":
                self.viz.write_overlay(path, rgb, amap, *self.scale)
            elif self.mode == "panels":
                self.writer.save(path, rgb, amap, mask, title=self._title(i, score))
            self.kept.append(dict(index=i, image=rgb, amap=amap, mask=mask, score=float(score),
                                  label=int(self.labels[i]), defect=self.defects[i], category=self.category))
        order = sorted(self.kept, key=lambda item: -item["score"])
        self.kept = order[: self.top] + [item for item in order[self.top:][-self.low:] if self.low]
        self.seconds += time.perf_counter() - start

    def _title(self, i: int, score: float) -> str:
        truth = "good" if self.labels[i] == 0 else "defective"
        return (f"{printable(self.category)} / {printable(self.defects[i])} / "
                f"{printable(Path(self.paths[i]).stem)}   score {score:.3f}   "
                f"(true: {truth})")

    def finish(self, vmin: float, vmax: float, keep: int) -> list[dict]:
        """Panels of the top-scored images on ``vmin..vmax``; the ``keep`` highest and lowest items."""
        import time

        start = time.perf_counter()
        order = sorted(self.kept, key=lambda item: -item["score"])
        if order:
            writer = self.viz.PanelWriter(vmin, vmax, with_mask=True, size=order[0]["amap"].shape)
            for rank, item in enumerate(order[:TOP_PANELS], 1):
                writer.save(self.out / "top" / f"{rank:02d}_{self.names[item['index']]}.png",
                            item["image"], item["amap"], item["mask"],
                            title=self._title(item["index"], item["score"]))
        picked = {item["index"]: item for item in order[:keep] + order[len(order) - keep:]} if keep else {}
        for item in picked.values():
            rank = "highest" if order.index(item) < keep else "lowest"
            item.update(vmin=vmin, vmax=vmax,
                        caption=f"{rank}: {printable(item['defect'])}/{printable(Path(self.paths[item['index']]).stem)}")
        self.seconds += time.perf_counter() - start
        return list(picked.values())


def _evaluate_into(root: Path, category: str, config, out: Path, *, heatmaps: str = "overlay", keep: int = 0):
    """Evaluate one category, writing metrics.json and heatmaps/ into ``out``.

    Returns the flat metrics dict, the seconds per phase (writing included),
    the number of heat maps written and, for the overview, the ``keep``
    highest- and ``keep`` lowest-scored test items.
    """
    import time

    from pcnotes.app.evaluation import evaluate_category
    from pcnotes.data.mvtec import load_split

    test = load_split(root, category, "test", config)  # lists files only: names for the heat maps
    writer = _HeatMaps(out, category, test, config, heatmaps, max(TOP_PANELS, keep), keep)
    _, result = evaluate_category(root, category, config,
                                  on_batch=None if heatmaps == "none" and not keep else writer)
    cut, total, images = result.cut
    if cut:
        print(f"warning: the centre crop {_size_text(config).split('crop ')[-1]} cut away {cut:,} of "
              f"{total:,} defect pixels ({100 * cut / total:.1f}%) in {images} test images; the metrics "
              "score only what it keeps (--crop none keeps the whole image)", file=sys.stderr, flush=True)
    start, batch_writing = time.perf_counter(), writer.seconds
    low, high = float(result.grids.min()), float(result.grids.max())  # the maps lie within their grids
    extremes = writer.finish(low, high, keep) if heatmaps != "none" or keep else []
    metrics = {
        "category": category,
        **{key: _json_number(value) for key, value in result.metrics.items()},
        **{f"{phase}_seconds": round(seconds, 3) for phase, seconds in result.phases.items()},
        "data_root": str(root),
        "layers": ",".join(config.layers),
        "image_size": _size_text(config),
        "coreset_ratio": config.coreset_ratio,
        "sampler": config.sampler,
        "num_neighbors": config.num_neighbors,
        "reweight": config.reweight,
        "index": config.index,
        "seed": config.seed,
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    phases = {**result.phases, "writing": batch_writing + time.perf_counter() - start}
    written = len(list((out / "heatmaps").glob("*.png"))) if (out / "heatmaps").is_dir() else 0
    return metrics, phases, written, extremes


def _print_phases(phases: dict, wall: float) -> None:
    """One short table: seconds and share of the wall time per phase; fit + predict's share."""
    rows = [*phases.items(), ("other", max(0.0, wall - sum(phases.values())))]
    print(f"  {'phase':<9} {'seconds':>8} {'share':>6}")
    for name, seconds in rows:
        print(f"  {name:<9} {seconds:8.1f} {100 * seconds / wall:5.0f}%")
    model = sum(phases.get(key, 0.0) for key in ("extract", "coreset", "search", "maps"))
    print(f"  {'wall':<9} {wall:8.1f}  (fit + predict: {100 * model / wall:.0f}%)")


# -- commands ---------------------------------------------------------------------------------


def _category_folder(root: Path, category: str) -> Path:
    """``ROOT/CATEGORY`` resolved; a category that is empty or names ROOT itself (``.``) is a usage error."""
    folder = Path(os.path.realpath(root / category))
    if not category.strip() or folder == Path(os.path.realpath(root)):
        raise UsageError(f"--category must name a category folder under {root} (e.g. bottle), got {category!r}")
    return folder


def default_output(category_folder: Path) -> Path:
    """``runs/NAME-HASH``: the category's name and 8 hex digits of the sha256 of its resolved path.

    Categories of the same name in two data sets (``a/cat``, ``b/cat``) get
    two outputs; the same category always gets the same one.
    """
    digest = hashlib.sha256(os.fsencode(category_folder)).hexdigest()[:8]
    return Path("runs") / f"{category_folder.name}-{digest}"


def cmd_evaluate(args) -> int:
    import time

    from pcnotes.data.mvtec import list_images

    start = time.perf_counter()
    given_root = _data_root(args)
    category_folder = _category_folder(given_root, args.category)
    # an absolute or nested --category: the data root is the folder that holds it
    root, category = category_folder.parent, category_folder.name
    train_dir = category_folder / "train" / "good"
    train_paths = list_images(train_dir) if train_dir.is_dir() else []
    config, sizes = _config(args, train_paths)
    _print_size(args, config, sizes)
    output = args.output if args.output is not None else default_output(category_folder)
    inputs = [given_root, root, category_folder]
    folders.check_target(output, "evaluate", inputs=inputs, force=args.force)
    print(f"evaluating {category_folder}", flush=True)
    with folders.replace_folder(output, "evaluate", inputs=inputs, force=args.force) as staging:
        metrics, phases, written, _ = _evaluate_into(root, category, config, staging, heatmaps=args.heatmaps)
    print(f"backbone {metrics['backbone']}, weights loaded: {metrics['weights']}")
    _print_table([(key, metrics[key]) for key in (
        "image_auroc", "pixel_auroc", "aupro", "n_train", "n_test", "memory_bank_size",
        "fit_seconds", "predict_seconds")])
    _print_phases(phases, time.perf_counter() - start)
    print(f"wrote {output / 'metrics.json'} and {written} heat maps in {output / 'heatmaps'}")
    return 0


def cmd_course(args) -> int:
    from pcnotes.app import edition  # nbformat only: no torch
    from pcnotes.util.paths import course_notebooks, display_path

    source = course_notebooks()
    write = edition.solutions_edition if args.solutions else edition.learner_edition
    try:
        written = write(source, args.folder, force=args.force)
    except edition.ChangedFileError as error:
        raise UsageError(str(error)) from None  # exit 2: --force decides
    notebooks = [path for path in written if path.suffix == ".ipynb"]
    deeper = sum(path.parent.name == edition.DEEPER for path in notebooks)
    what = "solution notebooks (executed)" if args.solutions else "learner edition"
    print(f"{what}: {len(notebooks)} notebooks ({deeper} of them in deeper/) from {display_path(source)} "
          f"written to {args.folder}")
    print(f"open {args.folder / notebooks[0].name} in Jupyter (e.g. jupyter lab --notebook-dir={args.folder})")
    return 0


def _expand_images(inputs: Sequence[Path]) -> list[Path]:
    """Files as given; folders become their image files, sorted by name."""
    from pcnotes.data.mvtec import DataError, list_images, no_images, note_skipped

    paths = []
    for path in inputs:
        if path.is_dir():
            found = list_images(path)
            if not found:
                raise no_images(path, "image files")
            note_skipped(path)
            paths.extend(found)
        elif path.exists():
            paths.append(path)
        else:
            raise DataError(f"{path}: no such file or folder")
    return paths


def cmd_fit(args) -> int:
    from pcnotes.data.mvtec import collect_notes, image_batches, image_transform, list_images, no_images
    from pcnotes.data.mvtec import note_skipped, photo_sizes
    from pcnotes.model import PatchCore

    train_dir = args.train_dir
    paths = list_images(train_dir)  # a missing folder, named
    config, sizes = _config(args, paths)  # a bad option fails first
    if not paths:
        raise no_images(train_dir, "training images")
    note_skipped(train_dir)
    if sizes is None:
        photo_sizes(paths)  # every training file read (not decoded): an unreadable one fails now
    _print_size(args, config, sizes)
    folders.check_target(args.model, "fit", inputs=[train_dir], force=args.force)  # PatchCore.save replaces it
    model = PatchCore(config)
    model.check_fit(len(paths))
    transform = image_transform(config.resize, config.crop, config.mean, config.std)
    print(f"backbone {config.backbone}, weights loaded: {model.weights}", flush=True)
    with collect_notes():
        model.fit(image_batches(paths, transform, config.batch_size))  # each image decoded once
    model.save(args.model, force=args.force)
    print(f"fitted on {len(paths)} images from {train_dir}: memory bank {model.memory_bank.shape[0]} "
          f"x {model.memory_bank.shape[1]}")
    print(f"saved {args.model}")
    return 0


#: The longest output file stem, in bytes: room for "_NN.png" and the hidden
#: staging name's prefix and suffix within the usual 255-byte limit.
MAX_STEM_BYTES = 100


def _shortened(name: str) -> str:
    """``name`` cut to :data:`MAX_STEM_BYTES` bytes as the file system stores it, whole characters only."""
    while len(os.fsencode(name)) > MAX_STEM_BYTES:
        name = name[:-1]
    return name


def unique_names(wanted: Sequence[str]) -> list[str]:
    """File names (without extension) that never collide: a taken name gets ``_2``, ``_3`` ...

    Each name is checked against every name given out before it, ignoring
    case (macOS and Windows folders do), so ``x, x, x_2`` become
    ``x, x_2, x_2_2``. Longer names are first cut to :data:`MAX_STEM_BYTES`
    bytes, so that a long input file name never makes an output name too long.
    """
    taken: set[str] = set()
    names = []
    for name in map(_shortened, wanted):
        candidate, n = name, 1
        while candidate.casefold() in taken:
            n += 1
            candidate = f"{name}_{n}"
        taken.add(candidate.casefold())
        names.append(candidate)
    return names


def _colour_scale(data_range: tuple[float, float], vmin: float | None, vmax: float | None) -> tuple[float, float]:
    """The heat maps' scale: the data's ``(low, high)`` where ``--vmin``/``--vmax`` leave it open.

    One end given alone must stay on its side of the other, data-given end;
    otherwise every map would be blank. Raises :class:`UsageError` naming it.
    """
    low, high = data_range
    if vmin is not None and vmax is None and not vmin < high:
        raise UsageError(f"--vmin ({vmin:g}) must be below the highest map value ({high:.3f}), the other end of "
                         "the scale: lower it, or give --vmax too")
    if vmax is not None and vmin is None and not low < vmax:
        raise UsageError(f"--vmax ({vmax:g}) must be above the lowest map value ({low:.3f}), the other end of "
                         "the scale: raise it, or give --vmin too")
    return (low if vmin is None else vmin), (high if vmax is None else vmax)


def cmd_predict(args) -> int:
    from pcnotes.app import plots as viz
    from pcnotes.data.mvtec import collect_notes, image_batches, image_transform, photo_sizes
    from pcnotes.model import PatchCore

    for option, value in (("--vmin", args.vmin), ("--vmax", args.vmax)):
        if value is not None and not math.isfinite(value):
            raise UsageError(f"{option} must be a finite number, got {value}")
    if args.vmin is not None and args.vmax is not None and not args.vmin < args.vmax:
        raise UsageError(f"--vmin ({args.vmin}) must be below --vmax ({args.vmax})")
    paths = _expand_images(args.images)
    inputs = [*args.images, *paths, args.model]
    folders.check_target(args.output, "predict", inputs=inputs, force=args.force)
    model = PatchCore.load(args.model)
    config = model.config
    photo_sizes(paths)  # every header read before scoring: an unreadable file fails now
    transform = image_transform(config.resize, config.crop, config.mean, config.std)
    print(f"model {args.model}: backbone {config.backbone}, weights loaded: {model.weights}", flush=True)
    names = unique_names([p.stem for p in paths])
    vmin, vmax, writer, done = args.vmin, args.vmax, None, 0
    with folders.replace_folder(args.output, "predict", inputs=inputs, force=args.force) as staging, \
            collect_notes():
        # surrogateescape: a file name that is not UTF-8 is written as its own bytes, so the row names the file
        with open(staging / "scores.csv", "w", newline="", encoding="utf-8", errors="surrogateescape") as stream:
            table = csv.writer(stream)
            table.writerow(["path", "score"])
            # one batch decoded, scored and written at a time; each image decoded once
            for images in image_batches(paths, transform, config.batch_size):
                batch = model.predict(images)
                if writer is None:  # the colour scale: --vmin/--vmax, else the first batch's min..max
                    vmin, vmax = _colour_scale(viz.shared_scale(batch.maps), args.vmin, args.vmax)
                    writer = viz.PanelWriter(vmin, vmax, with_mask=False, size=batch.maps.shape[1:])
                for score, amap, image in zip(batch.scores, batch.maps, images):
                    path, name = paths[done], names[done]
                    table.writerow([str(path), repr(float(score))])  # repr: exact round trip
                    writer.save(staging / f"{name}.png", viz.to_rgb(image, config.mean, config.std), amap,
                                title=f"{printable(path.name)}   score {score:.3f}")
                    done += 1
        writer.close()
        written = len(list(staging.glob("*.png")))
    print(f"scored {len(paths)} images; colour scale {vmin:.3f}..{vmax:.3f}")
    print(f"wrote {args.output / 'scores.csv'} and {written} heat maps in {args.output}")
    return 0


def cmd_demo(args) -> int:
    from pcnotes.app import plots as viz
    import time

    from pcnotes.data.mvtec import DataError, list_categories, list_images

    start = time.perf_counter()
    if args.data_root is None:
        from pcnotes.data.synth import ensure_default_dataset

        print("making sure the embedded synthetic data set exists ...", flush=True)
        root = ensure_default_dataset()
    else:
        root = args.data_root
    categories = list_categories(root)
    if not categories:
        raise DataError(f"{root}: no category folders with train/good in it")
    train_paths = {category: list_images(root / category / "train" / "good") for category in categories}
    configs = {category: _config(args, train_paths[category]) for category in categories}  # every file read first
    folders.check_target(args.output, "demo", inputs=[root], force=args.force)
    print(f"data {root}: {len(categories)} categories ({', '.join(categories)})", flush=True)

    rows, items, phases = [], [], {}
    with folders.replace_folder(args.output, "demo", inputs=[root], force=args.force) as staging:
        for category in categories:
            print(f"[{category}] fitting and scoring ...", flush=True)
            config, sizes = configs[category]
            _print_size(args, config, sizes)
            out = staging / category
            out.mkdir()
            metrics, seconds, _, extremes = _evaluate_into(root, category, config, out,
                                                           heatmaps=args.heatmaps, keep=2)
            phases = {phase: phases.get(phase, 0.0) + value for phase, value in seconds.items()}
            rows.append(metrics)
            items.extend(extremes)
            print(f"[{category}] image AUROC {_fmt(metrics['image_auroc'])}, pixel AUROC "
                  f"{_fmt(metrics['pixel_auroc'])}, {metrics['fit_seconds']:.1f} s fit, "
                  f"{metrics['predict_seconds']:.1f} s predict", flush=True)
        _write_summary_csv(staging / "metrics.csv", rows)
        figure = viz.overview_grid(
            items, title=f"PatchCore, {config.backbone}, coreset ratio {config.coreset_ratio:g}\n"
                         "per category: the 2 highest- and 2 lowest-scored test images; "
                         "white outline: true defect; colours: one scale per category")
        viz.save_figure(figure, staging / "overview.png")

    print(f"\nbackbone {config.backbone}, weights loaded: {rows[0]['weights']}")
    _print_demo_table(rows)
    print(f"\ntarget: image AUROC and pixel AUROC >= {TARGET_AUROC} per category")
    below = 0
    for row in rows:
        ok = all(row[key] is not None and row[key] >= TARGET_AUROC for key in ("image_auroc", "pixel_auroc"))
        below += not ok
        print(f"  {row['category']:<14} {'PASS' if ok else 'BELOW TARGET'}")
    if below:
        print(f"{below} of {len(rows)} categories are BELOW TARGET (reported, not an error)")
    _print_phases(phases, time.perf_counter() - start)
    print(f"heat maps: {args.output / '<category>' / 'heatmaps'}; metrics: {args.output / 'metrics.csv'}")
    print(args.output / "overview.png")
    return 0


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.4f}"


DEMO_COLUMNS = (("category", "category"), ("image AUROC", "image_auroc"), ("pixel AUROC", "pixel_auroc"),
                ("AUPRO", "aupro"), ("bank", "memory_bank_size"), ("fit s", "fit_seconds"),
                ("predict s", "predict_seconds"))


def _print_demo_table(rows: Sequence[dict]) -> None:
    def cell(key, value):
        if key in ("image_auroc", "pixel_auroc", "aupro"):
            return _fmt(value)
        if key.endswith("seconds"):
            return f"{value:.1f}"
        return str(value)

    table = [[title for title, _ in DEMO_COLUMNS]]
    table += [[cell(key, row[key]) for _, key in DEMO_COLUMNS] for row in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(DEMO_COLUMNS))]
    for n, line in enumerate(table):
        print("  " + "  ".join(text.ljust(w) if i == 0 else text.rjust(w)
                               for i, (text, w) in enumerate(zip(line, widths))))
        if n == 0:
            print("  " + "  ".join("-" * w for w in widths))


def _write_summary_csv(path: Path, rows: Sequence[dict]) -> None:
    with open(path, "w", newline="") as stream:
        table = csv.DictWriter(stream, fieldnames=list(rows[0]))
        table.writeheader()
        table.writerows(rows)
