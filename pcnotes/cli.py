"""``python -m pcnotes``: evaluate, fit, predict and demo from the command line.

The command line is a contract: scripts outside this repository call it on
their own data sets in the MVTec AD layout, so its options, files and exit
codes stay stable.

* exit 0 on success;
* exit 2 on a usage error (a bad option), with one line ``error: ...``;
* exit 1 on a data or model problem, with one line ``error: <reason>`` on
  stderr naming the file or folder (``--debug`` adds the traceback).

Nothing half-written is left behind: every command builds its output in a
temporary sibling folder and renames it into place only when everything
succeeded; an existing output folder is replaced only then (and only if it
looks like an earlier output of the same command, so that ``--output ~``
cannot wipe a home folder).

Heavy imports (torch, faiss, matplotlib) happen inside the commands, so that
``--help`` answers at once.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import math
import os
import shutil
import sys
import tempfile
import traceback
from collections.abc import Iterator, Sequence
from pathlib import Path

# Kept here (not imported from pcnotes.coreset / pcnotes.backbone) so that
# --help does not import torch; tests/test_cli.py checks they match.
SAMPLERS = ("approximate_greedy", "greedy", "random")
BACKBONES = ("mobilenet_v2", "wide_resnet50_2", "resnet18")
TARGET_AUROC = 0.95  # the demo's per-category target for image and pixel AUROC

#: The errors a user can cause with their data or model; anything else is a bug
#: and keeps its traceback.
USER_ERRORS = (ValueError, FileNotFoundError, RuntimeError, OSError)  # DataError is a ValueError


# -- argument types ----------------------------------------------------------------


def coreset_ratio(text: str) -> float:
    """argparse type: a number in (0, 1], checked by :func:`pcnotes.coreset.check_ratio`."""
    from pcnotes.coreset import check_ratio  # imported here, so that --help does not import torch

    try:
        return check_ratio(float(text))
    except ValueError:  # also "ten" and "nan"
        raise argparse.ArgumentTypeError(
            f"must be a number in (0, 1] (the fraction of patches kept in the memory bank), got {text!r}"
        ) from None


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

    def error(self, message: str):
        self.exit(2, f"error: {self.prog}: {message} (see '{self.prog} --help')\n")


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
               "  python -m pcnotes predict --model models/bottle new/*.png --output runs/new\n\n"
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
                    "  OUTPUT/heatmaps/DEFECT_NAME.png    per test image: image | anomaly map | ground truth,\n"
                    "                                     all on one colour scale (the test set's min..max)\n\n"
                    "It prints the weights loaded and a table of the metrics. An existing OUTPUT\n"
                    "from an earlier evaluate is replaced only when the run succeeds.",
    )
    evaluate.add_argument("--data-root", type=Path, default=None, metavar="ROOT",
                          help="data set in the MVTec AD layout (default: the embedded synthetic "
                               "set, $PCNOTES_DATA or data/synthetic, generated on first use)")
    evaluate.add_argument("--category", required=True, help="category folder under ROOT")
    evaluate.add_argument("--output", type=Path, default=None, metavar="DIR",
                          help="output folder (default: runs/CATEGORY)")
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
    predict.add_argument("--vmin", type=float, default=None, help="low end of the colour scale")
    predict.add_argument("--vmax", type=float, default=None, help="high end of the colour scale")
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
    _add_model_options(demo)
    _add_common(demo)
    demo.set_defaults(run=cmd_demo)
    return parser


# -- entry point ----------------------------------------------------------------------


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the exit status (0 ok, 1 data/model error, 2 usage error)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as stop:  # --help (0) or a usage error (2)
        return stop.code if isinstance(stop.code, int) else 0
    try:
        return args.run(args)
    except USER_ERRORS as error:
        if args.debug:
            traceback.print_exc()
        print(f"error: {_one_line(error)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


# -- writing outputs safely -------------------------------------------------------------


def _check_replaceable(target: Path, marker: str, command: str) -> None:
    """Refuse early to replace a folder that is not an earlier output of ``command``."""
    if Path.cwd().is_relative_to(target.resolve()):
        raise ValueError(f"output folder {target} is the current folder or one of its parents; "
                         "it would be replaced: choose a subfolder")
    if not target.exists():
        return
    if not target.is_dir():
        raise FileExistsError(f"{target}: exists and is not a folder")
    if any(target.iterdir()) and not (target / marker).is_file():
        raise FileExistsError(
            f"{target}: exists and is not an earlier '{command}' output (no {marker}); "
            "refusing to replace it: choose another --output or remove it"
        )


def _check_not_inside(inputs: Sequence[Path], target: Path) -> None:
    """Replacing ``target`` must never delete an input."""
    resolved = target.resolve()
    for path in inputs:
        if path.resolve().is_relative_to(resolved):
            raise ValueError(f"output folder {target} contains the input {path}: choose another")


@contextlib.contextmanager
def staged_output(target: Path) -> Iterator[Path]:
    """Yield an empty temporary sibling of ``target``; on success it becomes ``target``.

    On any failure the temporary folder (and any parent folders this made) is
    removed and an existing ``target`` is left as it was.
    """
    target = Path(os.path.abspath(target))  # also gives "." and "a/.." a real name
    created = [p for p in reversed(target.parents) if not p.exists()]
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        yield staging
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
            os.replace(target, old / target.name)
            try:
                os.replace(staging, target)
            except BaseException:
                os.replace(old / target.name, target)  # put the earlier output back
                shutil.rmtree(old, ignore_errors=True)
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        for folder in reversed(created):  # deepest first; only if still empty
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise


# -- shared pieces ------------------------------------------------------------------------


def _config(args):
    from pcnotes.model import PatchCoreConfig

    return PatchCoreConfig(
        backbone=args.backbone, weights=args.weights, layers=tuple(args.layers or ()),
        coreset_ratio=args.coreset_ratio, sampler=args.sampler, num_neighbors=args.num_neighbors,
        reweight=args.reweight, seed=args.seed,
    )


def _data_root(args) -> Path:
    if args.data_root is not None:
        return args.data_root
    from pcnotes.synth import ensure_default_dataset

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


def _evaluate_into(root: Path, category: str, config, out: Path, *, keep: int = 0):
    """Evaluate one category, writing metrics.json and heatmaps/ into ``out``.

    Returns the flat metrics dict and, for the overview, the ``keep``
    highest- and ``keep`` lowest-scored test items.
    """
    import numpy as np

    from pcnotes import viz
    from pcnotes.evaluation import evaluate_category, load_split

    _, result = evaluate_category(root, category, config)
    metrics = {
        "category": category,
        **{key: _json_number(value) for key, value in result.metrics.items()},
        "data_root": str(root),
        "layers": ",".join(config.layers),
        "coreset_ratio": config.coreset_ratio,
        "sampler": config.sampler,
        "num_neighbors": config.num_neighbors,
        "reweight": config.reweight,
        "seed": config.seed,
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")

    # One colour scale for the whole test set, so maps can be compared by eye.
    vmin, vmax = viz.shared_scale(result.maps)
    # For the overview: highest first, lowest last; an image that is both
    # (a tiny test set) appears once.
    order = np.argsort(-result.scores, kind="stable").tolist()
    picked = dict.fromkeys(order[:keep] + order[len(order) - keep:]) if keep else {}
    kept = {}
    test = load_split(root, category, "test", config)  # re-read for display only
    writer = viz.PanelWriter(vmin, vmax, with_mask=True, size=result.maps.shape[1:])
    for i in range(len(test)):
        item = test[i]
        rgb = viz.to_rgb(item["image"], config.mean, config.std)
        defect, name = result.defects[i], Path(result.paths[i]).stem
        truth = "good" if result.labels[i] == 0 else "defective"
        writer.save(out / "heatmaps" / f"{defect}_{name}.png", rgb, result.maps[i], result.masks[i],
                    title=f"{category} / {defect} / {name}   score {result.scores[i]:.3f}   "
                          f"(true: {truth})")
        if i in picked:
            rank = "highest" if order.index(i) < keep else "lowest"
            kept[i] = dict(image=rgb, amap=result.maps[i], mask=result.masks[i],
                           score=float(result.scores[i]), label=int(result.labels[i]),
                           defect=defect, category=category, vmin=vmin, vmax=vmax,
                           caption=f"{rank}: {defect}/{name}")
    writer.close()
    extremes = [kept[i] for i in picked]
    return metrics, extremes


# -- commands ---------------------------------------------------------------------------------


def cmd_evaluate(args) -> int:
    config = _config(args)
    root = _data_root(args)
    output = args.output if args.output is not None else Path("runs") / args.category
    _check_replaceable(output, "metrics.json", "evaluate")
    _check_not_inside([root], output)
    print(f"evaluating {root / args.category}", flush=True)
    with staged_output(output) as staging:
        metrics, _ = _evaluate_into(root, args.category, config, staging)
    print(f"backbone {metrics['backbone']}, weights loaded: {metrics['weights']}")
    _print_table([(key, metrics[key]) for key in (
        "image_auroc", "pixel_auroc", "aupro", "n_train", "n_test", "memory_bank_size",
        "fit_seconds", "predict_seconds")])
    print(f"wrote {output / 'metrics.json'} and {metrics['n_test']} heat maps in {output / 'heatmaps'}")
    return 0


def _image_files(folder: Path) -> list[Path]:
    from pcnotes.data import IMAGE_EXTENSIONS

    return sorted(p for p in folder.iterdir()
                  if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS)


def _expand_images(inputs: Sequence[Path]) -> list[Path]:
    """Files as given; folders become their image files, sorted by name."""
    from pcnotes.data import DataError

    paths = []
    for path in inputs:
        if path.is_dir():
            found = _image_files(path)
            if not found:
                raise DataError(f"{path}: folder has no image files")
            paths.extend(found)
        elif path.exists():
            paths.append(path)
        else:
            raise DataError(f"{path}: no such file or folder")
    return paths


def _batches(paths: Sequence[Path], transform, size: int):
    """Load images lazily, ``size`` at a time: ``-> (B, 3, H, W)`` tensors."""
    from pcnotes.data import load_images

    for start in range(0, len(paths), size):
        yield load_images(paths[start : start + size], transform)


def cmd_fit(args) -> int:
    from pcnotes.data import DataError, image_transform
    from pcnotes.model import PatchCore

    config = _config(args)
    train_dir = args.train_dir
    if not train_dir.is_dir():
        raise DataError(f"{train_dir}: training folder does not exist")
    paths = _image_files(train_dir)
    if not paths:
        raise DataError(f"{train_dir}: no training images in the folder")
    _check_replaceable(args.model, "config.json", "fit")  # PatchCore.save replaces the folder
    _check_not_inside([train_dir], args.model)
    model = PatchCore(config)
    print(f"backbone {config.backbone}, weights loaded: {model.weights}", flush=True)
    transform = image_transform(config.resize, config.crop, config.mean, config.std)
    model.fit(_batches(paths, transform, config.batch_size))
    model.save(args.model)
    print(f"fitted on {len(paths)} images from {train_dir}: memory bank {model.memory_bank.shape[0]} "
          f"x {model.memory_bank.shape[1]}")
    print(f"saved {args.model}")
    return 0


def _unique_names(paths: Sequence[Path]) -> list[str]:
    """PNG names from the image stems; a repeated stem gets ``_2``, ``_3`` ..."""
    seen: dict[str, int] = {}
    names = []
    for path in paths:
        seen[path.stem] = seen.get(path.stem, 0) + 1
        names.append(path.stem if seen[path.stem] == 1 else f"{path.stem}_{seen[path.stem]}")
    return names


def cmd_predict(args) -> int:
    import numpy as np

    from pcnotes import viz
    from pcnotes.data import image_transform
    from pcnotes.model import PatchCore

    if args.vmin is not None and args.vmax is not None and not args.vmin < args.vmax:
        raise ValueError(f"--vmin ({args.vmin}) must be below --vmax ({args.vmax})")
    paths = _expand_images(args.images)
    _check_replaceable(args.output, "scores.csv", "predict")
    _check_not_inside(paths + [args.model], args.output)
    model = PatchCore.load(args.model)
    config = model.config
    print(f"model {args.model}: backbone {config.backbone}, weights loaded: {model.weights}", flush=True)
    transform = image_transform(config.resize, config.crop, config.mean, config.std)
    # Chunks of whole batches, so each image is scored in the same batch as
    # by model.predict() on all images at once (bit-identical scores).
    chunk = 4 * config.batch_size
    scores, maps = [], []
    for images in _batches(paths, transform, chunk):
        prediction = model.predict(images)
        scores.append(prediction.scores)
        maps.append(prediction.maps)
    scores, maps = np.concatenate(scores), np.concatenate(maps)

    low, high = viz.shared_scale(maps)
    vmin = low if args.vmin is None else args.vmin
    vmax = high if args.vmax is None else args.vmax
    with staged_output(args.output) as staging:
        with open(staging / "scores.csv", "w", newline="") as stream:
            table = csv.writer(stream)
            table.writerow(["path", "score"])
            for path, score in zip(paths, scores):
                table.writerow([str(path), repr(float(score))])  # repr: exact round trip
        writer = viz.PanelWriter(vmin, vmax, with_mask=False, size=maps.shape[1:])
        for path, name, score, amap, images in zip(
                paths, _unique_names(paths), scores, maps, _each_image(paths, transform)):
            writer.save(staging / f"{name}.png", viz.to_rgb(images, config.mean, config.std), amap,
                        title=f"{path.name}   score {score:.3f}")
        writer.close()
    print(f"scored {len(paths)} images; colour scale {vmin:.3f}..{vmax:.3f}")
    print(f"wrote {args.output / 'scores.csv'} and {len(paths)} heat maps in {args.output}")
    return 0


def _each_image(paths, transform):
    for batch in _batches(paths, transform, 1):
        yield batch[0]


def cmd_demo(args) -> int:
    from pcnotes import viz
    from pcnotes.data import DataError, list_categories

    config = _config(args)
    if args.data_root is None:
        from pcnotes.synth import ensure_default_dataset

        print("making sure the embedded synthetic data set exists ...", flush=True)
        root = ensure_default_dataset()
    else:
        root = args.data_root
    categories = list_categories(root)
    if not categories:
        raise DataError(f"{root}: no category folders with train/good in it")
    _check_replaceable(args.output, "overview.png", "demo")
    _check_not_inside([root], args.output)
    print(f"data {root}: {len(categories)} categories ({', '.join(categories)})", flush=True)

    rows, items = [], []
    with staged_output(args.output) as staging:
        for category in categories:
            print(f"[{category}] fitting and scoring ...", flush=True)
            out = staging / category
            out.mkdir()
            metrics, extremes = _evaluate_into(root, category, config, out, keep=2)
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
