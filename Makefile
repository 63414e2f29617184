# Set-up and main jobs. `make demo` and `make test` each install what they need first.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
FMNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
# Where the demo keeps its latency database and tuning records (reused by reruns).
CACHE ?= $(HOME)/.cache/tvmnas
# The demo's latency goal: LATENCY_SHARE of the way from the fastest to the slowest network of the space in this
# machine's profile (`tvmnas search --latency-share`), so it binds whatever the CPU: on this VM kind fresh profiles
# put the space at 0.03-0.12, 0.06-0.18, 0.097-0.32 and 0.090-0.29 ms (bench/results/demo_search.md and its
# history), so a fixed goal in ms can sit at the edge of the range or below it. `make demo LATENCY_MS=0.1` sets a
# goal in ms instead.
LATENCY_SHARE ?= 0.3
LATENCY_MS ?=
# Epochs of training the searched network (about 150 s each here on 2 cores; one keeps `make demo` within 15
# minutes on a fresh machine: `make demo TRAIN_EPOCHS=3` trains longer and more accurately).
TRAIN_EPOCHS ?= 1
RUN := runs/demo
RUNNER := build/native/tvmnas-run

.PHONY: install dataset toolchain board-tools runner runner-aarch64 demo test flake-check bench-kernels

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt -e '.[test,bench]'
	touch $@

install: $(STAMP) dataset

# Debian packages are installed when missing, as root; without root `make` says what is missing and goes on
# (the demo then stops at the step that needs it; the tests that need it skip and say why).
APT_INSTALL = if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq
NOT_ROOT = ; else echo "note: not root, so not installing"

# Fashion-MNIST from Debian's dataset-fashion-mnist package (installed when missing; needs root).
dataset:
	@test -f $(FMNIST) || { $(APT_INSTALL) dataset-fashion-mnist $(NOT_ROOT) dataset-fashion-mnist; fi; }

# CMake and a C++ compiler for the native runner (installed when missing; needs root).
toolchain:
	@command -v cmake >/dev/null && command -v g++ >/dev/null || \
		{ $(APT_INSTALL) cmake g++ $(NOT_ROOT) cmake g++; fi; }

# What emulated aarch64 boards need (`tvmnas board up`, the integration tests): mmdebstrap, qemu-user, binfmt
# and the aarch64 cross compiler. Installed when missing (needs root); where that fails the integration tests
# say why and skip.
board-tools:
	@command -v mmdebstrap >/dev/null && test -e /usr/bin/qemu-aarch64-static && command -v update-binfmts >/dev/null \
		&& command -v aarch64-linux-gnu-g++ >/dev/null || \
		{ $(APT_INSTALL) mmdebstrap qemu-user-static binfmt-support g++-aarch64-linux-gnu \
			$(NOT_ROOT) the emulated-board tools; fi; } || echo "note: could not install the emulated-board tools"

# The native runner of deploy bundles, built against the TVM runtime inside the installed wheels.
runner: $(RUNNER)
$(RUNNER): CMakeLists.txt native/tvmnas_run.cc native/sha256.h $(STAMP) | toolchain
	cmake -S . -B build/native -DPYTHON=$(CURDIR)/$(BIN)/python >/dev/null
	cmake --build build/native

# The same runner cross-built for 64-bit ARM boards (Debian's cross compiler, the aarch64 wheels' runtime).
ARM_TVM := build/aarch64-tvm
runner-aarch64: build/native-aarch64/tvmnas-run
$(ARM_TVM)/.unpacked: constraints.txt native/fetch-aarch64-runtime.sh $(STAMP)
	native/fetch-aarch64-runtime.sh $(BIN)/pip $(ARM_TVM)
	touch $@
build/native-aarch64/tvmnas-run: CMakeLists.txt native/tvmnas_run.cc native/sha256.h $(ARM_TVM)/.unpacked | toolchain
	@command -v aarch64-linux-gnu-g++ >/dev/null || \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq g++-aarch64-linux-gnu; }
	cmake -S . -B build/native-aarch64 -DCMAKE_TOOLCHAIN_FILE=native/aarch64-linux-gnu.cmake \
		-DTVM_ROOT=$(CURDIR)/$(ARM_TVM)/tvm -DTVM_FFI_ROOT=$(CURDIR)/$(ARM_TVM)/tvm_ffi >/dev/null
	cmake --build build/native-aarch64

# The main job on the embedded default (Fashion-MNIST, this CPU): measure the space's candidates (tuned), search
# for the latency goal, train the winner, export it as a tuned TVM bundle, run it natively, report.
# A rerun reuses the measurements, tuning records, search and training.
demo: install runner
	$(BIN)/tvmnas profile --space fashion-mnist --target x86-cpu --db $(CACHE)/latency.db
	$(BIN)/tvmnas search --space fashion-mnist --target x86-cpu --db $(CACHE)/latency.db --out $(RUN) \
		$(if $(wildcard $(RUN)/checkpoint.pt),--resume $(RUN),$(if $(LATENCY_MS),--latency-ms $(LATENCY_MS),--latency-share $(LATENCY_SHARE)))
	test -f $(RUN)/train/summary.json || $(BIN)/tvmnas train --run $(RUN) --epochs $(TRAIN_EPOCHS)
	$(BIN)/tvmnas export --run $(RUN) --target x86-cpu --db $(CACHE)/latency.db
	$(RUNNER) $(RUN)/bundle-x86-cpu $(RUN)/bundle-x86-cpu/sample_input.npy
	$(BIN)/tvmnas report --run $(RUN)

# Every test, the integration tier included (its first run creates the boards' root filesystem: about 6 min).
test: install toolchain board-tools
	$(BIN)/python -m pytest -q

# Catch flaky fault tests before CI does: the x86 fault tests FAULT_RUNS times in a row, then the integration tier
# INTEGRATION_RUNS times, each run a fresh pytest; prints one line per run and a tally, fails if any run failed.
FAULT_RUNS ?= 20
INTEGRATION_RUNS ?= 10
flake-check: install toolchain board-tools
	$(BIN)/python tests/flake_check.py --fault-runs $(FAULT_RUNS) --integration-runs $(INTEGRATION_RUNS) \
		--record bench/results/flake_check

bench-kernels: install
	$(BIN)/tvmnas bench-kernels --target x86-cpu --space fashion-mnist --db $(CACHE)/latency.db --out bench/results/kernel_choices_x86
