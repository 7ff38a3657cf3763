"""Build the offline book from the committed notebooks, the README and docs/.

    python tools/build_book.py [OUT]     # default: book/_build/html

Sphinx with myst-nb reads the repository root with book/conf.py; the notebooks are
rendered with their committed outputs and never executed. Warnings fail the build
(a broken link, a missing image), after all of them have been listed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sphinx.cmd.build import build_main

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "book" / "_build" / "html"


def build(out: Path = DEFAULT_OUT) -> int:
    """Sphinx's exit status; the site's landing page is ``out/index.html``."""
    return build_main(["-b", "html", "-c", str(ROOT / "book"), "-W", "--keep-going", "-q",
                       "-d", str(Path(out) / ".doctrees"), str(ROOT), str(out)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", nargs="?", type=Path, default=DEFAULT_OUT, help="output folder")
    args = parser.parse_args(argv)
    status = build(args.out)
    if status == 0:
        print(f"book: open {args.out / 'index.html'} in a browser")
    return status


if __name__ == "__main__":
    sys.exit(main())
