# qat: two commands on a fresh machine (as root): `make demo` and `make test`.
# Every target first installs the Debian packages it needs, once.

APT_PACKAGES := libopenblas-dev libhdf5-dev hdf5-tools zlib1g-dev pkg-config dataset-fashion-mnist \
                libonnx-dev libprotobuf-dev libonnx-testdata libopenmpi-dev openmpi-bin
# pipefail: a failing command in a pipe (swift test | tee) fails the target.
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c

SWIFT ?= swift
QAT := .build/release/qat
# Importing a target that is not a declared dependency is an error, not a warning (Package.swift).
STRICT := --explicit-target-dependency-import-check error

.PHONY: all deps build demo test bench ptq-table behaviour-check layering fuzz fuzz-smoke clean venv-torch bench-peers examples-export onnx-examples interop bench-int8-gemm

all: build

# Installs only what is missing; `apt-get update` runs first because a fresh machine's lists are empty.
deps:
	@missing=""; for p in $(APT_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

build: deps
	$(SWIFT) build $(STRICT) -c release --product qat

demo: build
	./examples/demo.sh

# The suite is XCTest only; the empty Swift Testing run is switched off so the log ends on
# XCTest's summary.
test: deps
	$(SWIFT) build $(STRICT) --build-tests
	$(SWIFT) test --skip-build --disable-swift-testing 2>&1 | tee .build/test.log
	@summary=$$(grep -E "^\s*Executed [0-9]+ tests?, with [0-9]+ failures?" .build/test.log | tail -1); \
	total=$$(echo "$$summary" | sed -E 's/.*Executed ([0-9]+) tests?.*/\1/'); \
	failed=$$(echo "$$summary" | sed -E 's/.*with ([0-9]+) failures?.*/\1/'); \
	test -n "$$summary" || { echo "no XCTest summary found"; exit 1; }; \
	echo "$$((total - failed)) passed, $$failed failed"; \
	test "$$failed" = 0
	@# The bounded fuzz run (docs/FUZZING.md) against the release binary; `make fuzz` runs thousands.
	$(MAKE) --no-print-directory fuzz-smoke

# The LeNet-5 report of qat-bench three times (OPENBLAS_CORETYPE as set, Haswell, unset; about
# 3 minutes), the FMA-peak microbenchmark and the per-conv-layer GFLOP/s against it under the same
# three settings (bench/README.md; about 2 minutes each), bench/mpi_scaling.py (data-parallel QAT
# training of lenet5 and resnet-tiny under mpirun, 3 interleaved rounds; a few minutes), then, when .venv-torch exists or can be created (make venv-torch), bench/compare.py:
# the five networks of docs/BENCHMARKS.md against PyTorch eager / ONNX Runtime, 5 interleaved
# pairs per (model, mode, threads), 350 measurement processes of up to 6 s each: about an hour
# in all (estimated; one pair of 70 processes with a 3 s cap took 12 minutes on a 2-core machine
# at load 7-10). COMPARE_ARGS="--quick" (1 pair, few images): about 6 minutes at load 3-4.
# Last, bench/memory.py: peak RSS of float training, the data in memory and streamed, against
# PyTorch (3 rounds of 15 processes, about 3 minutes).
COMPARE_ARGS ?=
bench: deps
	$(SWIFT) build -c release --product qat-bench
	@echo "== OPENBLAS_CORETYPE as set by the environment ($${OPENBLAS_CORETYPE:-unset}) =="
	.build/release/qat-bench
	@echo "== OPENBLAS_CORETYPE=Haswell (OpenBLAS's AVX2 kernels) =="
	OPENBLAS_CORETYPE=Haswell .build/release/qat-bench
	@echo "== OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset (OpenBLAS picks its kernel from cpuid) =="
	env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE .build/release/qat-bench
	@echo "== FMA peak, and GFLOP/s of each conv layer (vgg-small, resnet18-tiny, mobilenetv2-tiny) as % of it =="
	.build/release/qat-bench --mode fma-peak --mode conv-layers
	OPENBLAS_CORETYPE=Haswell .build/release/qat-bench --mode conv-layers
	env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE .build/release/qat-bench --mode conv-layers
	@echo "== the checkpoint digest's cost against a checkpoint save (issue 14: under 5 %) =="
	QAT_TIMED_TESTS=1 $(SWIFT) test --filter ChecksumTests.testTheDigestCostsUnderFivePercentOfACheckpointSave 2>&1 \
	  | grep -E "checkpoint of|passed|failed|error"
	@echo "== data-parallel QAT training: 1 rank × 1 and 2 threads, 2 ranks × 1 thread, allreduce cost (bench/mpi_scaling.py) =="
	python3 bench/mpi_scaling.py
	@echo "== against PyTorch eager and ONNX Runtime (bench/compare.py $(COMPARE_ARGS)) =="
	@if $(MAKE) --no-print-directory venv-torch; then \
	  $(TORCH_VENV)/bin/python bench/compare.py --json .build/bench-compare.json $(COMPARE_ARGS); \
	else \
	  echo "no $(TORCH_VENV) and make venv-torch failed: the PyTorch comparison is skipped"; \
	fi
	@echo "== peak RSS of training: data in memory and streamed, against PyTorch (bench/memory.py) =="
	python3 bench/memory.py --json .build/bench-memory.json

# The AVX2 INT8 GEMM alone, ns per output against its depth (bench/int8_gemm_cost.c): plain C
# against Sources/CInt8, one thread on CPU 0.
bench-int8-gemm:
	@mkdir -p .build/int8-gemm-cost
	cd .build/int8-gemm-cost && clang -O2 -I../../Sources/CInt8/include -I../../Sources/CInt8 \
	  -c ../../Sources/CInt8/*.c && clang -O2 -I../../Sources/CInt8/include -I../../Sources/CInt8 \
	  ../../bench/int8_gemm_cost.c *.o -o int8-gemm-cost -lm
	taskset -c 0 .build/int8-gemm-cost/int8-gemm-cost

# PyTorch and ONNX Runtime in a venv of their own, for the peers of the bench (bench/) and the
# exporter of the ONNX examples (examples/onnx-models/); the test suite never needs them.
# TORCH_SPEC: the CPU-only wheel (about 190 MB) that this machine kind's pip finds in its
# find-links folder; if pip cannot find it, PyPI's plain torch, whose Linux wheel pulls several GB
# of CUDA packages (`make bench-peers TORCH_SPEC=torch==2.15.0` chooses that one).
TORCH_VENV := .venv-torch
TORCH_SPEC ?= torch==2.13.0+cpu
PEER_PACKAGES := numpy==2.4.6 onnx==1.23.2 onnxruntime==1.32.0
PEERS_ARGS ?=

$(TORCH_VENV)/.installed:
	python3 -m venv $(TORCH_VENV)
	$(TORCH_VENV)/bin/pip install -q "$(TORCH_SPEC)" $(PEER_PACKAGES) || \
	  $(TORCH_VENV)/bin/pip install -q torch $(PEER_PACKAGES)
	$(TORCH_VENV)/bin/python -c "import torch, onnx, onnxruntime; torch.randn(2) @ torch.randn(2); \
	  print('torch', torch.__version__, 'onnx', onnx.__version__, 'onnxruntime', onnxruntime.__version__)"
	touch $@

venv-torch: $(TORCH_VENV)/.installed

# One JSON line per measurement (bench/pytorch_peers.py --help); PEERS_ARGS="--quick" for a smoke run.
bench-peers: deps $(TORCH_VENV)/.installed
	@$(TORCH_VENV)/bin/python bench/pytorch_peers.py $(PEERS_ARGS)

# Retrains and re-exports examples/onnx-models/*.onnx and their reference inputs and logits.
examples-export: deps $(TORCH_VENV)/.installed
	$(TORCH_VENV)/bin/python examples/onnx-models/export.py

# The two example networks end to end: import, float fine-tune, QAT vs a float control, deploy,
# verify (examples/onnx-models/README.md). About 10 minutes per model; not part of `make test`.
onnx-examples: build
	./examples/onnx-models/run.sh all

# ONNX Runtime runs `qat export`'s models on the Fashion-MNIST test set and must agree with qat
# (tests/interop/ort_equivalence.py, docs/DEPLOY-FORMAT.md "ONNX"): LeNet-5 (a short QAT run from
# the shipped float checkpoint), resnet-tiny (a short float run, then QAT) and the two imported
# example networks (QAT from the import), each briefly trained; their QDQ and --exact exports
# against `qat eval --deploy`, and the float exports against our float forward. onnxruntime, onnx
# and numpy come from PyPI into a venv. About 5 minutes on 2 cores.
INTEROP_VENV := .venv-interop
INTEROP_DIR := .build/interop
INTEROP_CHECK = $(INTEROP_VENV)/bin/python tests/interop/ort_equivalence.py --qat $(QAT) --work $(INTEROP_DIR) --exact
# QAT of an example network: create-config's layer rules with the trainer sections of its control config.
INTEROP_QAT_LIMITS := --train-limit 2000 --test-limit 1000

$(INTEROP_VENV)/.installed:
	python3 -m venv $(INTEROP_VENV)
	$(INTEROP_VENV)/bin/pip install -q $(PEER_PACKAGES)
	touch $@

interop: build $(INTEROP_VENV)/.installed
	mkdir -p $(INTEROP_DIR)
	$(QAT) train --config Configs/retrain.json --epochs 1 --train-limit 10000 --test-limit 1000 \
	  --checkpoint-dir $(INTEROP_DIR)/lenet5-qat --output $(INTEROP_DIR)/lenet5-qat.h5 | tail -1
	$(INTEROP_CHECK) --name lenet5 --bitwise \
	  --qat-checkpoint $(INTEROP_DIR)/lenet5-qat.h5 --float-checkpoint Checkpoints/lenet5-float.h5
	$(QAT) train --config Configs/float.json --model Configs/models/resnet-tiny.json --epochs 1 --threads 2 \
	  --train-limit 20000 --test-limit 1000 --checkpoint-dir $(INTEROP_DIR)/resnet-tiny-float --output $(INTEROP_DIR)/resnet-tiny-float.h5 | tail -1
	$(QAT) create-config --model Configs/models/resnet-tiny.json --output $(INTEROP_DIR)/resnet-tiny-rules.json > /dev/null
	python3 tests/interop/retrain_config.py tests/interop/configs/resnet-tiny-qat.json $(INTEROP_DIR)/resnet-tiny-rules.json $(INTEROP_DIR)/resnet-tiny-qat.json
	$(QAT) train --config $(INTEROP_DIR)/resnet-tiny-qat.json --model Configs/models/resnet-tiny.json --init $(INTEROP_DIR)/resnet-tiny-float.h5 \
	  $(INTEROP_QAT_LIMITS) --checkpoint-dir $(INTEROP_DIR)/resnet-tiny-qat --output $(INTEROP_DIR)/resnet-tiny-qat.h5 | tail -1
	$(INTEROP_CHECK) --name resnet-tiny --bitwise \
	  --qat-checkpoint $(INTEROP_DIR)/resnet-tiny-qat.h5 --float-checkpoint $(INTEROP_DIR)/resnet-tiny-float.h5
	@for model in resnet18-tiny mobilenetv2-tiny; do \
	  spec=$${model//-/_}; out=$(INTEROP_DIR)/$$model; mkdir -p $$out; \
	  echo "== $$model"; \
	  $(QAT) import examples/onnx-models/$$model.onnx --output-dir $$out | sed -n 1p && \
	  $(QAT) create-config --model $$out/$$spec.json --output $$out/rules.json > /dev/null && \
	  python3 tests/interop/retrain_config.py examples/onnx-models/configs/$$model-control.json $$out/rules.json $$out/qat.json && \
	  $(QAT) train --config $$out/qat.json --model $$out/$$spec.json --init $$out/$$spec-float.h5 \
	    $(INTEROP_QAT_LIMITS) --checkpoint-dir $$out/qat --output $$out/qat.h5 | tail -1 || exit 1; \
	done
	$(INTEROP_CHECK) --name resnet18-tiny --opset 17 --bitwise \
	  --qat-checkpoint $(INTEROP_DIR)/resnet18-tiny/qat.h5 --float-checkpoint $(INTEROP_DIR)/resnet18-tiny/resnet18_tiny-float.h5
	$(INTEROP_CHECK) --name mobilenetv2-tiny --opset 17 \
	  --qat-checkpoint $(INTEROP_DIR)/mobilenetv2-tiny/qat.h5 --float-checkpoint $(INTEROP_DIR)/mobilenetv2-tiny/mobilenetv2_tiny-float.h5

# Issue 12's PTQ table (bench/ptq_table.py, docs/PTQ.md): float vs `qat calibrate` for every
# calibration method and IFMR with --cle / --bias-correction, on LeNet-5, resnet-tiny and the two
# imported example networks, each deployed and verified; then LeNet-5's QAT from the best PTQ
# checkpoint against QAT from its own calibration, and bench/qat_from_ptq.py (QAT from each PTQ
# checkpoint over five seeds, about 5 minutes). About 25 minutes on 2 cores.
ptq-table: build
	python3 bench/ptq_table.py | tee .build/ptq-table.md
	python3 bench/qat_from_ptq.py | tee .build/qat-from-ptq.md

# Byte-for-byte comparison of short seeded runs with the snapshot taken before the redesign.
behaviour-check: build
	scripts/behaviour-check.sh $(QAT)

# Every backwards import between the floors must fail to build.
layering: deps
	scripts/check-layering.sh

# The release qat run on damaged configs, checkpoints, deploy files and IDX data (docs/FUZZING.md).
# Ends with "N passed, M failed"; fails if M > 0. Failing cases stay in .build/fuzz/failures.
fuzz: build
	python3 scripts/fuzz.py --cases 3000 --qat $(QAT)

# The bounded form (300 cases, under a minute on 2 cores).
fuzz-smoke: build
	python3 scripts/fuzz.py --cases 300 --qat $(QAT)

clean:
	rm -rf .build
