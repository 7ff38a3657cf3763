# The two commands that matter: `make demo` and `make test`. Both set up
# everything they need on a fresh machine (a venv in .venv, the data set,
# Chromium for the browser test) before they run.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
# pip takes these two from local disk here; elsewhere they come from PyPI.
TORCH := torch==2.14.1 torchvision==0.29.1
# `make install CPU=1` (on a fresh clone, or after `make clean`): PyTorch's CPU-only build,
# without the 3 GB of CUDA libraries that PyPI's Linux torch brings; the course needs no GPU.
# It comes from PyTorch's CPU index; TORCH_CPU_INDEX= (empty) takes what pip finds without it.
# On Linux the pins carry the +cpu tag, so that pip fails, rather than falls back to PyPI's CUDA
# torchvision, when that index cannot be reached: PyPI's torchvision does not load against the
# CPU torch ("operator torchvision::nms does not exist"). macOS wheels have no tag and no CUDA.
CPU_TAG := $(if $(filter Linux,$(shell uname -s)),+cpu)
TORCH_CPU := torch==2.13.0$(CPU_TAG) torchvision==0.28.0$(CPU_TAG)
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
TORCH_PIP := $(if $(CPU),$(if $(TORCH_CPU_INDEX),--extra-index-url $(TORCH_CPU_INDEX)) $(TORCH_CPU),$(TORCH))
STAMP := $(VENV)/.installed

.PHONY: install demo test quick sync-check notebooks lab browser benchmark book clean learner wordcount

install: $(STAMP)
	@if [ -n "$(CPU)" ] && ! grep -qx cpu $(STAMP); then \
	  echo "$(VENV) already holds the default (CUDA) torch: run 'make clean' first, then 'make install CPU=1'"; exit 1; fi

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH_PIP)
	$(BIN)/pip install -q -e '.[dev]'
	# a `python3` kernelspec inside the venv, so nbval and JupyterLab use this env
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (pcnotes)"
	echo $(if $(CPU),cpu,default) > $@

# Headless Chromium for the Playwright test (Playwright's own download can't work here).
browser:
	@command -v chromium >/dev/null || { \
	  echo "installing Debian's chromium for the browser test"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium >/dev/null; }
	@chromium --version

demo: install
	$(BIN)/python -m pcnotes demo

test: install browser
	$(BIN)/python -m pytest tests
	$(MAKE) --no-print-directory sync-check
	$(MAKE) --no-print-directory wordcount
	# the notebooks adopt the solutions' stages: into a folder of their own, never a learner's
	PCNOTES_COURSE_DIR="$$(mktemp -d)" $(BIN)/python -m pytest --nbval-lax --nbval-current-env \
	  --nbval-sanitize-with notebooks/sanitize.cfg notebooks/

# The unit tests that take under a minute together: no slow ones, no browser.
quick: install
	$(BIN)/python -m pytest tests -m "not slow and not browser"

# The .py (percent) and .ipynb of every notebook must hold the same inputs.
sync-check: install
	$(BIN)/python tools/nbsync.py check notebooks

# Re-sync every .ipynb from its .py and re-execute it in place.
notebooks: install
	PCNOTES_COURSE_DIR="$$(mktemp -d)" $(BIN)/python tools/nbsync.py execute notebooks $(if $(ONLY),--only $(ONLY))

# The learner edition in learner/ (git-ignored): solutions replaced by stubs, no outputs,
# from the .py sources (`python -m pcnotes course DIR` writes the same from the .ipynb).
# It never overwrites a notebook someone changed there (exit 2); FORCE=1 does.
learner: install
	$(BIN)/python tools/learner.py --source notebooks --out learner $(if $(FORCE),--force)

# Minutes per core notebook by the timing model (docs/teachers_guide.md); fails over a block or the word budget.
wordcount: install
	$(BIN)/python tools/wordcount.py notebooks --max 3000

lab: install
	$(BIN)/jupyter lab --notebook-dir=notebooks

# The coreset benchmark (benchmarks/README.md): about 5 minutes on 2 idle cores; it rewrites
# benchmarks/results/coreset.json and coreset.md. Compare ratios within one run only.
benchmark: install
	$(BIN)/python benchmarks/coreset.py --old fb87a8c

# The offline book (book/README.md): the committed notebooks, README and docs/ as a static
# site in book/_build/html; open its index.html. `make test` builds and checks it too.
book: install
	$(BIN)/python tools/build_book.py book/_build/html

clean:
	rm -rf $(VENV) data/synthetic runs book/_build build dist
