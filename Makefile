# pynetbuilder: every target does its own set-up.
#   make run   build ResNet-50 into out/resnet50 and print its report (no C++ build needed)
#   make test  install everything missing (venv, Debian packages, real Caffe) and run the tests
#   make rknn  RKNN-Toolkit2 2.5.0 in its own environment .venv-rknn (its pins conflict with
#              .venv's), the judge of nets written with --target rknn2; part of `make test`
#   make caffe-cuda [CUDA_ARCHS="75 90"]  also build Caffe with CUDA (needs nvcc; long, not
#              part of `make test`): .venv/bin/caffe-cuda, used by `pynetbuilder train --gpu`
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: run test caffe caffe-cuda schema lint bench bench-torch clean browser rknn

$(STAMP): setup.py requirements-dev.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install -q --disable-pip-version-check --upgrade pip
	@$(PY) -m pip install -q --disable-pip-version-check -r requirements-dev.txt
	@$(PY) tools/caffe_setup.py schema
	@$(PY) -m pip install -q --disable-pip-version-check --no-build-isolation -e ".[torch]"
	@touch $@

schema: $(STAMP)
	@$(PY) tools/caffe_setup.py schema

caffe: schema
	@$(PY) tools/caffe_setup.py build

caffe-cuda: schema
	@$(PY) tools/caffe_setup.py build --cuda $(if $(CUDA_ARCHS),--arch "$(CUDA_ARCHS)")

run: schema
	$(PY) apps/imagenet/build_resnet.py -m bottleneck -b 3 4 6 3 -n 256 --no-fc_layers -o out/resnet50

# Graphviz (drawings) and Debian's chromium (the HTML report's browser test)
browser:
	@$(PYTHON) tools/browser_setup.py

# RKNN-Toolkit2's environment (~180 MB of wheels once, under a minute; then a stamp check)
rknn: $(STAMP)
	@$(PY) tools/rknn_setup.py

test: caffe browser rknn
	$(PY) -m ruff check .
	$(PY) -m pytest

bench: schema
	$(PY) benchmarks/bench_analysis.py
	$(PY) benchmarks/bench_prototext.py

bench-torch: caffe
	$(PY) benchmarks/bench_pytorch.py

clean:
	rm -rf out .pytest_cache .ruff_cache
