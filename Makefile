# Two commands for a fresh machine:  make demo  (train LeNet-5 on Fashion-MNIST)  and  make test.
# make notebooks  writes the lessons as Jupyter notebooks into notebooks/.
# Each creates its own virtual environment in .venv and installs what it needs.
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
# Real datasets for tests (MNIST lives beside the repository; never copied into it).
export MINICNN_DATA ?= $(abspath ../shared/datasets)
FASHION_DEBIAN := /usr/share/datasets/fashion-mnist

.PHONY: demo test data browser bench clean notebooks

$(VENV)/.installed: setup.cfg pyproject.toml
	python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# torch first and pinned: 2.13.0 is the CPU build; an open range pulls several GB of CUDA.
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[reference,test]'
	touch $@

# Fashion-MNIST from Debian when we can (root + apt); otherwise minicnn downloads it itself.
data:
	@if [ ! -d $(FASHION_DEBIAN) ] && command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
		apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist; \
	fi

# Debian's chromium for the browser test of `python -m minicnn show` (Playwright drives it; it
# never downloads a browser of its own). Without root or apt the test skips, and fails in CI.
browser:
	@if [ ! -x /usr/bin/chromium ] && command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
		apt-get update -qq && apt-get install -y -qq chromium; \
	fi

demo: $(VENV)/.installed data
	$(PY) -m minicnn train --model lenet5 --dataset fashion-mnist --epochs 1 \
		--batch-size 64 --optimizer adam --lr 1e-3 --seed 0 --out runs/demo --overwrite

test: $(VENV)/.installed data browser
	# one BLAS thread per pytest worker: two workers already fill the two cores
	OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MINICNN_REQUIRE_FRAMEWORKS=1 MINICNN_REQUIRE_DATA=1 \
		$(PY) -m pytest -n 2 -q

# The lessons as Jupyter notebooks in notebooks/ (generated, not tracked: edit the .md pages).
# jupytext and ipykernel come with the test extra that .installed installs.
notebooks: $(VENV)/.installed
	$(PY) tools/notebooks.py --out notebooks

clean:
	rm -rf $(VENV) runs .pytest_cache .hypothesis
