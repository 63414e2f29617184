# Set-up and main jobs. `make demo` and `make test` each install what they need first.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
FMNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
# Where the demo keeps its latency database and tuning records (reused by reruns).
CACHE ?= $(HOME)/.cache/tvmnas
# The demo's latency goal for the searched network (ms, predicted from the measured kernels).
LATENCY_MS ?= 0.5

.PHONY: install dataset demo test bench-kernels

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt -e '.[test]'
	touch $@

install: $(STAMP) dataset

# Fashion-MNIST from Debian's dataset-fashion-mnist package (installed when missing; needs root).
dataset:
	@test -f $(FMNIST) || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist; }

# The main job on the embedded default: measure the space's candidates on this CPU (tuned), then search.
demo: install
	$(BIN)/tvmnas profile --space fashion-mnist --target x86-cpu --db $(CACHE)/latency.db
	$(BIN)/tvmnas search --space fashion-mnist --target x86-cpu --latency-ms $(LATENCY_MS) --db $(CACHE)/latency.db \
		--out runs/demo $(if $(wildcard runs/demo/checkpoint.pt),--resume runs/demo,)

test: install
	$(BIN)/python -m pytest -q

bench-kernels: install
	$(BIN)/tvmnas bench-kernels --target x86-cpu --space fashion-mnist --db $(CACHE)/latency.db --out bench/results/kernel_choices_x86
