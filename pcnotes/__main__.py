"""``python -m pcnotes``: see :mod:`pcnotes.app.cli`."""

from pcnotes.app.cli import main

raise SystemExit(main())
