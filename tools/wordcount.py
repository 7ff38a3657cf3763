"""How long each core notebook takes in class, by a model anyone can rerun.

    python tools/wordcount.py [DIR] [--guide docs/teachers_guide.md] [--max WORDS]

One row per core notebook (DIR/NN_topic.py; deeper/ is not counted):

    estimate (min) = markdown words / 150 + 5 per in-class exercise + 0.5 per code cell

A word is a whitespace-separated token with at least one letter or digit, so
table rules, bullets and lone symbols do not count; every markdown cell counts,
fenced blocks and hidden answers included. An exercise is a markdown heading
that starts with "Exercise". A section whose heading says "fast finishers" is
done only by those who finish early, while the class moves on: its exercises,
words and code cells cost 0 minutes (they are listed apart).

The block of each notebook is read from the plan table of the teacher's guide
(its "min" and "notebook" columns), the one place the plan is kept. The exit
status is 1 when a notebook's estimate is over its block (less what is
reserved below for a section still to come), when a notebook's "**N minutes**"
line disagrees with its block, when the blocks do not sum to 90 minutes, or, with ``--max``, when the core markdown is over that many words.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import jupytext
from nbsync import NAME_PATTERN

WORD = re.compile(r"\w")
WORDS_PER_MINUTE = 150
MINUTES_PER_EXERCISE = 5.0
MINUTES_PER_CODE_CELL = 0.5
FAST_FINISHERS = "fast finishers"  # in an exercise's heading: not done in class
STATED = re.compile(r"\*\*(\d+) minutes\*\*")  # the block a notebook states under its title
HEADING = re.compile(r"^(#{1,6})\s+(.*)$")  # a markdown heading: its level and its title
SESSION_MINUTES = 90
# Minutes kept free in a notebook's block for a section that is planned but not yet written
# there, until a heading with that title exists: 05's capstone, about 120 words and 4 code cells.
RESERVED = {"05": (3.0, "Your PatchCore")}
PLAN_ROW = re.compile(r"^\|[^|]*\|\s*(\d+)\s*\|\s*(\d\d)\b")  # | clock | min | NN · title | ...
DEFAULT_GUIDE = Path(__file__).resolve().parents[1] / "docs" / "teachers_guide.md"


def words(text: str) -> int:
    return sum(bool(WORD.search(token)) for token in text.split())


def markdown_words(py: Path) -> int:
    return sum(words(cell.source) for cell in jupytext.read(py).cells if cell.cell_type == "markdown")


def load(py: Path) -> dict:
    """Words, in-class exercises, fast finishers' exercises and code cells of one notebook.

    A section whose heading says "fast finishers" runs to the next heading of its level or
    above; its words and code cells are left out with its exercises, as it is not done in class.
    """
    counts = {"words": 0, "exercises": 0, "fast finishers": 0, "code cells": 0, "headings": [], "stated": None}
    extra_level = 0  # the heading level of the fast finishers' section we are in, 0 outside one
    for cell in jupytext.read(py).cells:
        if cell.cell_type == "code":
            counts["code cells"] += not extra_level
            continue
        if cell.cell_type != "markdown":
            continue
        stated = STATED.search(cell.source)
        if stated and counts["stated"] is None:
            counts["stated"] = int(stated.group(1))
        for line in cell.source.splitlines():
            heading = HEADING.match(line)
            if heading:
                level, title = len(heading.group(1)), heading.group(2).lower()
                counts["headings"].append(title)
                if extra_level and level <= extra_level:
                    extra_level = 0
                if FAST_FINISHERS in title and not extra_level:
                    extra_level = level
                if title.startswith("exercise"):
                    counts["fast finishers" if extra_level else "exercises"] += 1
            counts["words"] += 0 if extra_level else words(line)
    return counts


def estimate(counts: dict) -> float:
    """Minutes in class: reading, in-class exercises and running the code cells."""
    return (counts["words"] / WORDS_PER_MINUTE + MINUTES_PER_EXERCISE * counts["exercises"]
            + MINUTES_PER_CODE_CELL * counts["code cells"])


def blocks(guide: Path) -> dict[str, int]:
    """``{"02": 20, ...}``: the minutes of each notebook in the guide's plan table."""
    plan = {}
    for line in guide.read_text(encoding="utf-8").splitlines():
        match = PLAN_ROW.match(line)
        if match:
            plan[match.group(2)] = int(match.group(1))
    return plan


def reserved(number: str, counts: dict) -> float:
    minutes, title = RESERVED.get(number, (0.0, ""))
    return 0.0 if any(title.lower() in heading for heading in counts["headings"]) else minutes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("directory", nargs="?", default=Path("notebooks"), type=Path)
    parser.add_argument("--guide", type=Path, default=DEFAULT_GUIDE, help="the teacher's guide with the plan table")
    parser.add_argument("--max", type=int, default=None, help="a word budget for all core notebooks together")
    args = parser.parse_args(argv)
    notebooks = sorted(args.directory.glob(f"{NAME_PATTERN}.py"))
    if not notebooks:
        print(f"no core notebooks (NN_topic.py) in {args.directory}", file=sys.stderr)
        return 1
    if not args.guide.is_file():
        print(f"no teacher's guide at {args.guide}: pass --guide FILE", file=sys.stderr)
        return 1
    plan = blocks(args.guide)
    problems = []
    print(f"{'notebook':<30} {'words':>6} {'exercises':>9} {'code cells':>10} {'estimate':>8} {'block':>5}")
    total_words = 0
    for py in notebooks:
        counts = load(py)
        total_words += counts["words"]
        number = py.stem[:2]
        minutes, block, keep = estimate(counts), plan.get(number), reserved(number, counts)
        note = f"  (+{counts['fast finishers']} for fast finishers)" if counts["fast finishers"] else ""
        note += f"  ({keep:g} min kept for '{RESERVED[number][1]}')" if keep else ""
        print(f"{py.stem:<30} {counts['words']:>6} {counts['exercises']:>9} {counts['code cells']:>10} "
              f"{minutes:>8.1f} {block if block is not None else '-':>5}{note}")
        if block is None:
            problems.append(f"{py.stem} has no row in the plan table of {args.guide}")
        elif counts["stated"] not in (None, block):
            problems.append(f"{py.stem} says **{counts['stated']} minutes** under its title, the plan in "
                            f"{args.guide} gives it {block}: make them agree")
        if block is not None and minutes + keep > block:
            problems.append(f"{py.stem} takes {minutes:.1f} min (+{keep:g} kept) in a {block}-min block: "
                            f"move detail to {args.directory}/deeper/ or give it a bigger block in {args.guide}")
    total_block = sum(plan.values())
    print(f"{'all':<30} {total_words:>6} {'':>9} {'':>10} {'':>8} {total_block:>5}")
    if total_block != SESSION_MINUTES:
        problems.append(f"the blocks in {args.guide} sum to {total_block} min, not {SESSION_MINUTES}")
    if args.max is not None and total_words > args.max:
        problems.append(f"the core markdown is {total_words - args.max} words over the budget of {args.max}: "
                        f"move detail to {args.directory}/deeper/")
    for problem in problems:
        print(problem, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
