"""Sphinx configuration of the offline book (`make book`); see book/README.md.

The source folder is the repository root, so the notebooks, the README and docs/
are read where they live: nothing is copied and no link needs rewriting.
Only the files named in ``include_patterns`` become pages.
"""

import logging

project = "pcnotes"
author = "the pcnotes authors"
html_title = "pcnotes: PatchCore, one stage at a time"

extensions = [
    "myst_nb",  # .ipynb and .md pages (MyST Markdown, notebook outputs as committed)
    "sphinx-mathjax-offline",  # MathJax 3 from the wheel, copied into _static/mathjax
]

# The landing page with the table of contents. Sphinx writes it to
# book/index.html; _extra/index.html sends the site root there.
root_doc = "book/index"
include_patterns = [
    "book/index.md",
    "README.md",
    "notebooks/[0-9][0-9]_*.ipynb",  # the core path
    "notebooks/deeper/*.ipynb",  # the deep dives
    "docs/*.md",  # the teacher's guide, the cheat sheet, ...
    "*/README.md",  # benchmarks/, data/, book/: so the README may link to them
]
# Pruned while Sphinx walks the tree: hidden folders (.venv, .git, caches), the
# generated data set, run outputs and the book's own build.
exclude_patterns = [".*", "**/.*", "data/synthetic", "runs", "artifacts", "book/_build"]
html_extra_path = ["_extra"]
# pcnotes.css: long code and output lines wrap rather than being clipped at the column.
html_static_path = ["_static"]
html_css_files = ["pcnotes.css"]

# Notebooks are rendered with the outputs they were committed with, never re-run.
nb_execution_mode = "off"
nb_merge_streams = True
# The explorer is a live ipywidget: without a kernel it has nothing to show, and its
# JavaScript would come from a CDN. The notebook's snapshot figure stands in for it.
nb_ipywidgets_js = {}
nb_mime_priority_overrides = [("html", "application/vnd.jupyter.widget-view+json", None)]

myst_enable_extensions = ["dollarmath", "amsmath"]
myst_heading_anchors = 3  # [text](#a-heading) links within a page

html_theme = "sphinx_book_theme"
html_theme_options = {
    "show_toc_level": 2,
    "navigation_with_keys": False,
}
# Without it the theme's first page logs "Got invalid theme mode" as a console error.
html_context = {"default_mode": "auto"}
html_last_updated_fmt = None  # no build dates on the pages


# docs/ and notebooks/deeper/ may not exist yet, so their toctree globs may match nothing.
# Sphinx 9.0 logs that warning without a type, which suppress_warnings cannot name, so
# a filter drops it for these two globs only.
OPTIONAL_GLOBS = ("'../notebooks/deeper/*'", "'../docs/*'")


def _not_an_optional_empty_glob(record: logging.LogRecord) -> bool:
    message = record.getMessage()
    return not ("didn't match any documents" in message and any(g in message for g in OPTIONAL_GLOBS))


def setup(app):
    logging.getLogger("sphinx.sphinx.directives.other").addFilter(_not_an_optional_empty_glob)
