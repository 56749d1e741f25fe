# The two front-door commands (README):
#   make book   set up .venv (pinned torch pair) and build the executed book into _build/html
#   make test   set up .venv and run every test: library unit tests, doctests, nbval over book/
# AKT_DATA_DIR defaults to ../shared/data beside the repository (override in the environment).

PYTHON    ?= python3
VENV      ?= .venv
BIN       := $(VENV)/bin
TORCH_PIN := torch==2.14.1 torchvision==0.29.1
STAMP     := $(VENV)/.installed

export AKT_DATA_DIR ?= $(abspath ../shared/data)
export AKT_WEIGHTS_DIR ?= $(abspath ../shared/weights)
export PYTHONHASHSEED := 0

.PHONY: setup book test clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH_PIN)
	$(BIN)/python -m pip install -q -e '.[book,test]' $(TORCH_PIN)
	touch $(STAMP)

book: $(STAMP)
	$(BIN)/jupyter-book build . --warningiserror --keep-going

test: $(STAMP)
	$(BIN)/python -m pytest -q

clean:
	rm -rf _build
