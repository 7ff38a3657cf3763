"""Count the words of markdown in the core notebooks, the course's reading load.

    python tools/wordcount.py [DIR] [--max WORDS]

One line per core notebook (DIR/NN_topic.py; deeper/ is not counted), then the
total. A word is a whitespace-separated token with at least one letter or
digit, so table rules, bullets and lone symbols do not count; code cells do
not count; every markdown cell does, fenced blocks and hidden answers
included. With ``--max`` the exit status is 1 when the total is over it.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import jupytext
from nbsync import NAME_PATTERN

WORD = re.compile(r"\w")


def markdown_words(py: Path) -> int:
    cells = jupytext.read(py).cells
    return sum(bool(WORD.search(token)) for cell in cells if cell.cell_type == "markdown"
               for token in cell.source.split())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("directory", nargs="?", default=Path("notebooks"), type=Path)
    parser.add_argument("--max", type=int, default=None, help="the budget for all core notebooks together")
    args = parser.parse_args(argv)
    notebooks = sorted(args.directory.glob(f"{NAME_PATTERN}.py"))
    if not notebooks:
        print(f"no core notebooks (NN_topic.py) in {args.directory}", file=sys.stderr)
        return 1
    counts = {py.stem: markdown_words(py) for py in notebooks}
    for stem, words in counts.items():
        print(f"{words:6d}  {stem}")
    total = sum(counts.values())
    print(f"{total:6d}  core markdown in all" + (f" (budget {args.max})" if args.max is not None else ""))
    if args.max is not None and total > args.max:
        print(f"the core markdown is {total - args.max} words over the budget of {args.max}: "
              f"move detail to {args.directory}/deeper/", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
