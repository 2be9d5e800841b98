# sar-despeckle: `make demo` and `make test` set everything up themselves (idempotent).
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
SYSPY := /usr/bin/python3
STAMP := $(VENV)/.setup-done
TRAIN_STAMP := $(VENV)/.training-done
PLUGIN := sar_despeckle_plugin
BUILD := build
export QT_QPA_PLATFORM ?= offscreen
# Headless QGIS: the real executable, our plugin folder, and the venv's packages (onnxruntime).
QGIS_ENV = QGIS_PLUGINPATH=$(abspath $(BUILD)) PYTHONPATH=$(abspath $(VENV))/lib/python3.11/site-packages:$(abspath .)
APT_PACKAGES := qgis python3-qgis qgis-providers gdal-bin python3-gdal python3-venv python3-pip python3-scipy

.PHONY: setup setup-training demo test plugin package bench bench-polsar models clean

setup: $(STAMP)

$(STAMP): requirements.txt
	@if ! command -v qgis_process.bin >/dev/null || ! $(SYSPY) -c "import qgis.core, osgeo.gdal, numpy, scipy" 2>/dev/null \
	    || ! $(SYSPY) -c "import ensurepip" 2>/dev/null; then \
	  echo "Installing QGIS, GDAL and their Python bindings from Debian (needs root)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(APT_PACKAGES); \
	fi
	test -x $(PY) || $(SYSPY) -m venv --system-site-packages $(VENV)
	echo "numpy==$$($(SYSPY) -c 'import numpy; print(numpy.__version__)')" > $(VENV)/constraints.txt
	$(PY) -m pip install -q --disable-pip-version-check -c $(VENV)/constraints.txt -r requirements.txt
	$(PY) -c "import onnxruntime, osgeo.gdal_array, qgis.core; print('setup ok: onnxruntime', onnxruntime.__version__)"
	touch $@

setup-training: $(TRAIN_STAMP)

$(TRAIN_STAMP): $(STAMP) training/requirements.txt
	$(PY) -m pip install -q --disable-pip-version-check -c $(VENV)/constraints.txt -r training/requirements.txt
	touch $@

plugin: setup
	rm -rf $(BUILD)/$(PLUGIN)
	mkdir -p $(BUILD)
	cp -r $(PLUGIN) $(BUILD)/
	find $(BUILD)/$(PLUGIN) -name __pycache__ -prune -exec rm -rf {} +
	cp metadata.txt LICENSE $(BUILD)/$(PLUGIN)/

package: plugin
	mkdir -p dist
	rm -f dist/$(PLUGIN).zip
	cd $(BUILD) && ../$(PY) -m zipfile -c ../dist/$(PLUGIN).zip $(PLUGIN)
	@echo "dist/$(PLUGIN).zip: install it with Plugins > Manage and Install Plugins > Install from ZIP"

demo: plugin
	bash demo/run_demo.sh

# The suite includes the training tests (a few steps on tiny data), hence setup-training.
test: plugin setup-training
	$(QGIS_ENV) $(PY) -m pytest -q tests

bench: plugin
	$(QGIS_ENV) $(PY) benchmarks/bench_pipeline.py
	$(QGIS_ENV) $(PY) benchmarks/bench_filters.py

# Retrain the bundled models from scratch (CPU: days, see sar_despeckle_plugin/models/README.md;
# DEVICE=cuda: minutes). Each run exports runs/<name>/<name>.onnx with its card and metrics.
DEVICE ?= cpu
TRAIN := $(PY) -m training.train_dncnn --device $(DEVICE) --batch 128 --patch 64 --depth 17 --width 64 \
	--lr 0.001 --warmup 200 --loss l2 --looks 1 --norm-scale 2 --jitter 0.5 --s1-weight 0.4 --seed 0 --bf16
# MuLog against boxcar, polarimetric Refined Lee and the reference MuLoG+BM3D (installed apart,
# in .venv/ref-mulog, when it installs): PSNR, coherence error, seconds per MPx.
bench-polsar: plugin
	test -d $(VENV)/ref-mulog || $(PY) -m pip install -q --disable-pip-version-check --no-deps \
	  --target $(VENV)/ref-mulog mulog bm3d bm4d scipy==1.15.3 PyWavelets==1.8.0 nptyping strenum \
	  typing_extensions || echo "reference MuLoG+BM3D not installable: the benchmark skips it"
	$(QGIS_ENV) $(PY) benchmarks/bench_polsar.py --onnx $(PLUGIN)/models/gaussian_dncnn_log.onnx

models: setup-training
	$(TRAIN) --steps 28982 --out runs/dncnn-l1-general
	$(TRAIN) --steps 14041 --looks-max 8 --single-look-fraction 0.5 --out runs/dncnn-l1to8-blind --name dncnn-l1to8-blind
	@echo "Compare runs/*/*.onnx with sar_despeckle_plugin/models/ (python -m training.evaluate FILE), then copy them there."

clean:
	rm -rf $(BUILD) dist $(VENV)
