"""Fit and evaluate time and peak memory against the number of training and test images.

Run from the repository root::

    .venv/bin/python benchmarks/scale.py [--size 224] [--train 50 100 200 400]
                                         [--test 100 250 500 1000 2000] [--name scale]
    .venv/bin/python benchmarks/scale.py --phases 200 500 [--name phases]

Each point is one ``evaluate_category`` (the code behind ``python -m pcnotes
evaluate``, heat maps off) in a fresh Python process, so that its peak
resident memory (``ru_maxrss`` from ``os.wait4``) is its own. The data set is
the embedded synthetic ``wood`` category (``pcnotes.data.synth``) with its
files repeated by symbolic links up to the counts asked for: the images repeat,
so the metrics mean nothing here; the time and the memory are what is measured.

Two sweeps: training images at the smallest test count, then test images at
the smallest training count. ``--size S`` resizes every image to S x S (whole
image, no crop). The default, 224, is the model's default input size, where a
map per test image held in memory would show (200 kB each: 400 MB for 2,000
images); it took 32 minutes on 2 shared cores. ``--size 64`` runs the grid, 800
training images included, in a few minutes. The table goes to
``benchmarks/results/<name>.json`` and ``.md`` and the curves to ``<name>.png``.

``--phases N_TRAIN N_TEST`` instead runs ``python -m pcnotes evaluate`` at its
defaults (image size 256 / crop 224 for these square images, heat maps on) on
the same repeated category and writes the phase table the CLI printed
(validate, extract, coreset, search, maps, metrics, writing, other, wall) to
``<name>.json`` and ``.md`` (default name ``phases``).

The seconds are wall-clock on whatever machine runs this (compare within one run).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
CATEGORY = "wood"
MODEL_PHASES = ("extract", "coreset", "search", "maps")  # fit + predict, as the CLI counts them


def _link_repeated(sources: list[Path], folder: Path, count: int) -> list[Path]:
    """``count`` links ``0000.png ...`` in ``folder`` to ``sources``, cycled."""
    folder.mkdir(parents=True, exist_ok=True)
    links = []
    for i in range(count):
        link = folder / f"{i:04d}.png"
        link.symlink_to(sources[i % len(sources)].resolve())
        links.append(link)
    return links


def make_set(source: Path, root: Path, n_train: int, n_test: int) -> Path:
    """An MVTec-layout category ``root/wood`` with ``n_train`` training and ``n_test`` test images.

    Half the test images (rounded down) are good, the rest defective of the
    source's first defect, each link paired with its own mask link.
    """
    category = root / CATEGORY
    _link_repeated(sorted((source / "train" / "good").glob("*.png")), category / "train" / "good", n_train)
    n_good = n_test // 2
    _link_repeated(sorted((source / "test" / "good").glob("*.png")), category / "test" / "good", n_good)
    defect = sorted(p.name for p in (source / "test").iterdir() if p.name != "good")[0]
    images = sorted((source / "test" / defect).glob("*.png"))
    links = _link_repeated(images, category / "test" / defect, n_test - n_good)
    masks = category / "ground_truth" / defect
    masks.mkdir(parents=True)
    for i, link in enumerate(links):
        (masks / f"{link.stem}_mask.png").symlink_to(
            (source / "ground_truth" / defect / f"{images[i % len(images)].stem}_mask.png").resolve())
    return root


def _child(root: str, size: int) -> None:
    """In the measured process: one evaluation, its seconds as one JSON line on stdout."""
    import time

    from pcnotes.app.evaluation import evaluate_category
    from pcnotes.config import PatchCoreConfig

    start = time.perf_counter()
    _, result = evaluate_category(root, CATEGORY, PatchCoreConfig(resize=(size, size), crop=None))
    print(json.dumps({"evaluate_seconds": time.perf_counter() - start,
                      "fit_seconds": result.metrics["fit_seconds"],
                      "predict_seconds": result.metrics["predict_seconds"],
                      "memory_bank_size": result.metrics["memory_bank_size"],
                      "phases": result.phases}))


def measure(source: Path, n_train: int, n_test: int, size: int) -> dict:
    """Evaluate ``n_train`` / ``n_test`` images of ``size`` x ``size`` in a child process."""
    with tempfile.TemporaryDirectory(prefix="pcnotes-scale-") as folder:
        root = make_set(source, Path(folder), n_train, n_test)
        child = subprocess.Popen([sys.executable, __file__, "--child", str(root), str(size)],
                                 stdout=subprocess.PIPE, text=True, env={**os.environ})
        output = child.stdout.read()
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
        if child.returncode != 0:
            raise RuntimeError(f"the evaluation of {n_train} / {n_test} images failed ({child.returncode})")
    row = json.loads(output.strip().splitlines()[-1])
    peak_mb = usage.ru_maxrss / 1024  # kilobytes on Linux
    return {"n_train": n_train, "n_test": n_test, "size": size, "peak_mb": round(peak_mb, 1),
            **{key: round(value, 2) if isinstance(value, float) else value for key, value in row.items()}}


def parse_phases(output: str) -> dict:
    """The CLI's phase table (``phase seconds share`` rows, then ``wall``) -> seconds per phase and the wall."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.split() == ["phase", "seconds", "share"])
    seconds = {}
    for line in lines[start + 1:]:
        match = re.match(r"  (\w+) +([0-9.]+)", line)
        if not match:
            break
        seconds[match[1]] = float(match[2])
        if match[1] == "wall":
            break
    return seconds


def run_phases(source: Path, n_train: int, n_test: int) -> dict:
    """``python -m pcnotes evaluate`` at its defaults (heat maps on) on a made set: the CLI's phase table."""
    import time

    with tempfile.TemporaryDirectory(prefix="pcnotes-phases-") as folder:
        root = make_set(source, Path(folder) / "data", n_train, n_test)  # the output may not lie in it
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "pcnotes", "evaluate", "--data-root", str(root),
                               "--category", CATEGORY, "--output", str(Path(folder) / "run")],
                              capture_output=True, text=True, env={**os.environ})
        process_seconds = time.perf_counter() - start
        if done.returncode != 0:
            raise RuntimeError(f"the evaluation of {n_train} / {n_test} images failed:\n{done.stderr}")
        metrics = json.loads((Path(folder) / "run" / "metrics.json").read_text())
        heat_maps = len(list((Path(folder) / "run" / "heatmaps").glob("*.png")))
    seconds = parse_phases(done.stdout)
    model = sum(seconds[key] for key in MODEL_PHASES)
    return {"n_train": n_train, "n_test": n_test, "image_size": metrics["image_size"], "heat_maps": heat_maps,
            "seconds": seconds, "fit_predict_share": round(model / seconds["wall"], 3),
            "process_seconds": round(process_seconds, 1)}


def phases_markdown(row: dict) -> str:
    wall = row["seconds"]["wall"]
    lines = ["| phase | seconds | share of the wall time |", "| --- | ---: | ---: |"]
    lines += [f"| {name} | {value:.1f} | {100 * value / wall:.0f}% |" for name, value in row["seconds"].items()]
    return "\n".join(lines)


def write_phases(row: dict, machine: str, results: Path, name: str) -> None:
    results.mkdir(parents=True, exist_ok=True)
    (results / f"{name}.json").write_text(json.dumps({"machine": machine, **row}, indent=1) + "\n")
    (results / f"{name}.md").write_text(
        f"# scale.py --phases: the CLI's phase table on {row['n_test']} test images\n\n{machine}. "
        f"`python -m pcnotes evaluate` at its defaults (image size {row['image_size']}, heat maps on: "
        f"{row['heat_maps']} overlays and the top panels) on the embedded `{CATEGORY}` repeated to "
        f"{row['n_train']} training and {row['n_test']} test images; the table the CLI printed:\n\n"
        f"{phases_markdown(row)}\n\nfit + predict ({', '.join(MODEL_PHASES)}): "
        f"{100 * row['fit_predict_share']:.0f}% of the wall time. The whole process, Python's start and "
        f"imports included, took {row['process_seconds']:.1f} s.\n")


def markdown(rows: list[dict]) -> str:
    lines = ["| train images | test images | memory bank | fit s | predict s | evaluate s | peak memory MB |",
             "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for row in rows:
        lines.append(f"| {row['n_train']} | {row['n_test']} | {row['memory_bank_size']:,} | {row['fit_seconds']:.1f} "
                     f"| {row['predict_seconds']:.1f} | {row['evaluate_seconds']:.1f} | {row['peak_mb']:,.0f} |")
    return "\n".join(lines)


def _phases_text(row: dict) -> str:
    return " ".join(f"{name} {seconds:.1f}" for name, seconds in row["phases"].items())


def plot(train_rows: list[dict], test_rows: list[dict], path: Path) -> None:
    from matplotlib.figure import Figure

    figure = Figure(figsize=(10, 4), dpi=80)
    for column, (rows, key, label) in enumerate(((train_rows, "n_train", "training images"),
                                                 (test_rows, "n_test", "test images"))):
        seconds = figure.add_subplot(1, 2, column + 1)
        counts = [row[key] for row in rows]
        seconds.plot(counts, [row["evaluate_seconds"] for row in rows], "o-", color="C0", label="evaluate s")
        seconds.set_xlabel(label)
        seconds.set_ylabel("seconds", color="C0")
        memory = seconds.twinx()
        memory.plot(counts, [row["peak_mb"] for row in rows], "s--", color="C3", label="peak MB")
        memory.set_ylabel("peak memory (MB)", color="C3")
        memory.set_ylim(bottom=0)
        seconds.set_ylim(bottom=0)
    figure.tight_layout()
    figure.savefig(path)


def _machine(load_before: float) -> str:
    """The date, Python, the cores and their load before and after the run (other jobs share them)."""
    return (f"{datetime.date.today()}, python {platform.python_version()}, {os.cpu_count()} CPU cores, load average "
            f"{load_before:.1f} before the run and {os.getloadavg()[0]:.1f} after it (shared with other jobs: "
            "compare within this run only)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=224, help="images resized to S x S (default: %(default)s)")
    parser.add_argument("--train", type=int, nargs="+", default=[50, 100, 200, 400])
    parser.add_argument("--test", type=int, nargs="+", default=[100, 250, 500, 1000, 2000])
    parser.add_argument("--name", default="scale", help="results file name (default: %(default)s)")
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--phases", nargs=2, type=int, metavar=("N_TRAIN", "N_TEST"),
                        help="instead of the sweeps: one `python -m pcnotes evaluate` at its defaults (heat maps "
                             "on) and its phase table, written to <name>.json and .md (default name: phases)")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(args.child[0], int(args.child[1]))
        return 0

    from pcnotes.data.synth import ensure_default_dataset

    source = ensure_default_dataset() / CATEGORY
    before = os.getloadavg()[0]
    if args.phases:
        row = run_phases(source, *args.phases)
        name = "phases" if args.name == "scale" else args.name
        write_phases(row, _machine(before), args.results, name)
        print(phases_markdown(row))
        print(f"fit + predict: {100 * row['fit_predict_share']:.0f}% of the wall time; wrote "
              f"{args.results / name}.json and .md")
        return 0
    train_rows, test_rows = [], []
    for n_train in args.train:
        train_rows.append(measure(source, n_train, min(args.test), args.size))
        print(markdown(train_rows).splitlines()[-1], _phases_text(train_rows[-1]), flush=True)
    for n_test in args.test:
        test_rows.append(measure(source, min(args.train), n_test, args.size))
        print(markdown(test_rows).splitlines()[-1], _phases_text(test_rows[-1]), flush=True)
    machine = _machine(before)
    growth = test_rows[-1]["peak_mb"] / test_rows[0]["peak_mb"]
    record = {"machine": machine, "size": args.size, "train_sweep": train_rows, "test_sweep": test_rows,
              "peak_memory_growth_over_test_sweep": round(growth, 3)}
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / f"{args.name}.json").write_text(json.dumps(record, indent=1) + "\n")
    text = (f"# scale.py: time and peak memory against the number of images ({args.size} x {args.size})\n\n"
            f"{machine}. Each row is one `evaluate_category` in a fresh process (heat maps off); peak memory "
            f"is that process's maximum resident set.\n\n## Training images\n\n{markdown(train_rows)}\n\n"
            f"## Test images\n\n{markdown(test_rows)}\n\nPeak memory with {test_rows[-1]['n_test']} test "
            f"images is {growth:.2f}x that with {test_rows[0]['n_test']}.\n\n![curves]({args.name}.png)\n")
    (args.results / f"{args.name}.md").write_text(text)
    plot(train_rows, test_rows, args.results / f"{args.name}.png")
    print(f"wrote {args.results / args.name}.json, .md and .png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
