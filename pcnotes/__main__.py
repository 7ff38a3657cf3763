"""``python -m pcnotes``: see :mod:`pcnotes.cli`."""

from pcnotes.cli import main

raise SystemExit(main())
