"""Write the learner edition from the notebook sources: ``make learner``.

    python tools/learner.py [--source notebooks] [--out learner] [--force]

Reads the jupytext sources (SOURCE/NN_topic.py and SOURCE/deeper/NN_topic.py),
the source of truth while the course is written, and writes
OUT/NN_topic.ipynb and OUT/deeper/NN_topic.ipynb. The rules (solution cells
stubbed, answers left out, no outputs, a learner's changed notebook never
overwritten without ``--force``) are those of :mod:`pcnotes.app.edition`,
which ``python -m pcnotes course DIR`` uses on the committed .ipynb.

Exit status: 0 written, 1 a source it cannot turn into an edition, 2 a
notebook in OUT that someone changed (named in one line); nothing is written
in either case.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pcnotes.app.edition import DEEPER, ChangedFileError, EditionError, learner_edition


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", type=Path, default=Path("notebooks"), help="the solution notebooks' folder")
    parser.add_argument("--out", type=Path, default=Path("learner"), help="where the learner edition goes")
    parser.add_argument("--force", action="store_true", help="overwrite learner notebooks that were changed")
    args = parser.parse_args(argv)
    try:
        written = learner_edition(args.source, args.out, args.force, suffix=".py")
    except EditionError as error:
        print(f"learner edition: {error}", file=sys.stderr)
        return 2 if isinstance(error, ChangedFileError) else 1
    notebooks = [path for path in written if path.suffix == ".ipynb"]
    deeper = sum(path.parent.name == DEEPER for path in notebooks)
    print(f"learner edition: {len(notebooks)} notebooks ({deeper} deeper) written to {args.out}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
