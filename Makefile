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

.PHONY: setup setup-training demo test plugin package help-pages gpu-bundle models-gpu-smoke bench bench-cuda bench-polsar bench-quality models models-smoke clean

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

# A borrowed GPU machine (training/gpu_run.py): pack the training references for the trip, then run
# there, with carry [".devdata"]:
#   python3 -m training.gpu_run run --config unet_l1_correlated_long --minutes 7 --data .devdata --out $$OUT
# and here: python -m training.gpu_run join /work/.device/... --out runs/unet-l1-correlated-long
gpu-bundle: setup-training
	$(PY) -m training.gpu_run pack --out .devdata
	@echo "travels: $$(git ls-files -z | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1) bytes of tracked files + .devdata (limit 64 MiB)"

# The same recipe on this CPU with a 30-second budget (what a GPU machine would run, end to end)
models-gpu-smoke: gpu-bundle
	rm -rf runs/gpu-smoke
	$(PY) -m training.gpu_run run --config unet_l1_correlated_long --minutes 0.5 --data .devdata --out runs/gpu-smoke
	$(PY) -m training.gpu_run join runs/gpu-smoke --out runs/gpu-smoke/joined

# Regenerate the bundled help pages (sar_despeckle_plugin/help/*.html) from the algorithms' texts
help-pages: setup
	QT_QPA_PLATFORM=offscreen $(QGIS_ENV) $(PY) -m sar_despeckle_plugin.processing.helppages

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

# Speed and memory. bench_scene.py (issue 17) runs every bundled model and Auto through
# qgis_process on 2048^2 and 4096^2 rasters, with raw onnxruntime on the same tiles, the classical
# Lee (and OTB where installed) and MuLog on C3: about an hour on 2 cores (SCENE_RUNS=1 halves it).
# bench_tiles.py (10 min) measures each network's default tile; --write-cards applies it to the cards.
SCENE_RUNS ?= 2
# On a GPU machine (onnxruntime-gpu with its CUDA wheels; no QGIS needed, PY=python3 works too):
# every bundled despeckler on CUDA, batches, fp16, CPU-vs-GPU difference, int8, and the pipeline end to
# end where GDAL's Python bindings are installed (issue 17 item 5).
bench-cuda:
	mkdir -p benchmarks/results
	$(PY) benchmarks/bench_cuda.py --json benchmarks/results/bench_cuda.json --markdown benchmarks/results/bench_cuda.md

bench: plugin
	$(QGIS_ENV) $(PY) benchmarks/bench_pipeline.py
	$(QGIS_ENV) $(PY) benchmarks/bench_filters.py
	mkdir -p benchmarks/results
	$(QGIS_ENV) $(PY) benchmarks/bench_explain.py --markdown benchmarks/results/bench_explain.md
	$(QGIS_ENV) $(PY) benchmarks/bench_tiles.py --markdown benchmarks/results/bench_tiles.md
	$(QGIS_ENV) $(PY) benchmarks/bench_halo.py --markdown benchmarks/results/bench_halo.md
	$(QGIS_ENV) $(PY) benchmarks/bench_batch.py --markdown benchmarks/results/bench_batch.md
	$(QGIS_ENV) $(PY) benchmarks/bench_scene.py --runs $(SCENE_RUNS) --markdown benchmarks/results/bench_scene.md \
	  --json benchmarks/results/bench_scene.json

# Retrain the bundled despeckling models from their configurations (training/configs/*.yaml).
# CPU times on the 2-core development machine are in sar_despeckle_plugin/models/README.md
# (the two DnCNN models take days on CPU; DEVICE=cuda takes minutes). Each run writes
# runs/<name>/checkpoint.pt and runs/<name>/<name>.onnx with its card and metrics.
DEVICE ?= cpu
# The bundled int8 files: quantised copies of these runs (python -m training quantize).
INT8_MODELS := dncnn-l1-general unet-l1-fast unet-l1-correlated unet-l4-correlated unet-s1grd-pairs unet-l1-long \
  unet-l1-correlated-long
# The lite U-Nets and the time series' ratio and super-image networks ship in int8 only, calibrated on
# 60 images per reference set; model 14 also ships in float32 for GPUs, its int8 weights dequantised
# (python -m training dequantize).
INT8_LITE := unet-l1-lite unet-l1-correlated-lite unet-l1-correlated-lite-long unet-ratio unet-super
# The float16 twins that CUDA runs on tensor cores (models.json "fp16"): Auto's float32 picks there.
FP16_TWINS := unet-l1-long/unet_l1_long unet-l1-correlated-lite-long/unet_l1_correlated_lite_long_fp32 \
  dncnn-l1to8-blind/dncnn_l1to8_blind
# In order: unet_s1grd_pairs fine-tunes the checkpoint of unet_l4_correlated; unet_l1_correlated_long
# fine-tunes the bundled unet_l1_long.onnx (the committed file, so that it reproduces the bundled model);
# unet_l1_lite and unet_l1_correlated_lite prune the committed unet_l1_long / unet_l1_correlated_long;
# unet_l1_correlated_lite_long trains the committed unet_l1_correlated_lite_int8 further (dequantised);
# unet_ratio and unet_super start from the committed unet_l1_correlated_long; unet_l1_lite16_long and
# unet_l1_correlated_lite16_long (MODELs 16, 17: float32) train the committed exports of their pruning
# runs further (checkpoints/unet_l1_lite16.onnx, checkpoints/unet_l1_correlated_lite16.onnx).
MODEL_CONFIGS := dncnn_l1_general dncnn_l1to8_blind unet_l1_fast unet_l1_correlated unet_l4_correlated unet_s1grd_pairs unet_l1_long \
  unet_l1_correlated_long unet_l1_lite unet_l1_correlated_lite unet_l1_correlated_lite_long unet_ratio unet_super \
  unet_l1_lite16_long unet_l1_correlated_lite16_long
# MuLog against boxcar, polarimetric Refined Lee and the reference MuLoG+BM3D (installed apart,
# in .venv/ref-mulog, when it installs): PSNR, coherence error, seconds per MPx.
bench-polsar: plugin
	test -d $(VENV)/ref-mulog || $(PY) -m pip install -q --disable-pip-version-check --no-deps \
	  --target $(VENV)/ref-mulog mulog bm3d bm4d scipy==1.15.3 PyWavelets==1.8.0 nptyping strenum \
	  typing_extensions || echo "reference MuLoG+BM3D not installable: the benchmark skips it"
	mkdir -p benchmarks/results
	set -o pipefail; $(QGIS_ENV) $(PY) benchmarks/bench_polsar.py --field sanfrancisco flevoland \
	  --onnx $$($(PY) -c "import json; print(' '.join('$(PLUGIN)/models/' + m['file'] for m in json.load(open('$(PLUGIN)/models/models.json'))['gaussian_models']))") \
	  --draws 3 --markdown benchmarks/results/bench_polsar.md | tee benchmarks/results/bench_polsar.txt
	$(QGIS_ENV) $(PY) benchmarks/bench_polsar_real.py --markdown benchmarks/results/bench_polsar_real.md
	set -o pipefail; $(QGIS_ENV) $(PY) benchmarks/bench_polsar_heldout.py --no-flip \
	  --onnx $(PLUGIN)/models/gaussian_dncnn_log_smooth_long_int8.onnx | tee benchmarks/results/bench_polsar_heldout.txt

models: setup-training
	for c in $(MODEL_CONFIGS); do $(PY) -m training train --config training/configs/$$c.yaml --device $(DEVICE) || exit 1; done
	for m in $(INT8_MODELS); do f=$${m//-/_}; \
	  $(PY) -m training quantize runs/$$m/$$f.onnx --out runs/$$m/$${f}_int8.onnx || exit 1; done
	for m in $(INT8_LITE); do f=$${m//-/_}; \
	  $(PY) -m training quantize runs/$$m/$$f.onnx --out runs/$$m/$${f}_int8.onnx --images 60 || exit 1; done
	$(PY) -m training dequantize runs/unet-l1-correlated-lite-long/unet_l1_correlated_lite_long_int8.onnx \
	  --out runs/unet-l1-correlated-lite-long/unet_l1_correlated_lite_long_fp32.onnx --halo 44
	for f in $(FP16_TWINS); do $(PY) -m training half runs/$$f.onnx --out runs/$${f/_fp32/}_fp16.onnx || exit 1; done
	$(PY) -m training.gaussian train --steps 6969 --batch 64 --patch 48 --depth 8 --width 32 --sigma-power 2 \
	  --lr 0.001 --warmup 200 --norm-scale 2 --sigma-min 0.02 --sigma-max 2 --weights 0.45,0.4,0.15 --seed 0 \
	  --bf16 --out runs/gaussian
	$(PY) -m training quantize runs/gaussian/gaussian_dncnn_log.onnx --out runs/gaussian/gaussian_dncnn_log_int8.onnx
	$(PY) -m training.gaussian train --steps 10000 --batch 64 --patch 48 --depth 8 --width 32 --sigma-power 2 \
	  --lr 0.001 --warmup 200 --norm-scale 2 --sigma-min 0.02 --sigma-max 2 --weights 0.45,0.4,0.15 \
	  --blur-prob 0.5 --blur-max 2.5 --seed 0 --bf16 --out runs/gaussian-smooth
	$(PY) -m training.gaussian export runs/gaussian-smooth/checkpoint.pt --name gaussian-dncnn-log-smooth \
	  --out runs/gaussian-smooth/gaussian_dncnn_log_smooth.onnx
	$(PY) -m training quantize runs/gaussian-smooth/gaussian_dncnn_log_smooth.onnx \
	  --out runs/gaussian-smooth/gaussian_dncnn_log_smooth_int8.onnx
	$(PY) -m training.gaussian train --steps 30000 --batch 64 --patch 48 --depth 8 --width 32 --sigma-power 2 \
	  --lr 0.001 --warmup 200 --norm-scale 2 --sigma-min 0.02 --sigma-max 2 --weights 0.35,0.35,0.3 \
	  --blur-prob 0.5 --blur-max 2.5 --seed 0 --bf16 --out runs/gaussian-smooth-long
	$(PY) -m training.gaussian export runs/gaussian-smooth-long/checkpoint.pt --name gaussian-dncnn-log-smooth-long \
	  --out runs/gaussian-smooth-long/gaussian_dncnn_log_smooth_long.onnx
	$(PY) -m training quantize runs/gaussian-smooth-long/gaussian_dncnn_log_smooth_long.onnx \
	  --out runs/gaussian-smooth-long/gaussian_dncnn_log_smooth_long_int8.onnx
	@echo "Compare runs/*/*.onnx with sar_despeckle_plugin/models/ (make bench-quality), then copy them there."

# Every configuration for 3 steps on small batches, exported (no evaluation): checks the recipes.
models-smoke: setup-training
	$(PY) -m training smoke --out runs/smoke

# PSNR/SSIM of the bundled models against classical filters (TSX pairs, BSD68) and CPU speed.
# Then the real-data benchmark: Sentinel-1 dates against the other dates, ratio statistics on real
# GRD and SLC crops, a correlated-speckle TerraSAR-X proxy; every model, Auto and the filters.
# Then the time series (bench_timeseries.py; RABASAR's row comes from bench_rabasar.py, run in its
# own environment, see its docstring).
bench-quality: plugin
	mkdir -p benchmarks/results
	$(QGIS_ENV) $(PY) benchmarks/bench_quality.py --markdown benchmarks/results/bench_quality.md \
	  --json benchmarks/results/bench_quality.json
	$(QGIS_ENV) $(PY) benchmarks/bench_real.py --markdown benchmarks/results/bench_real.md \
	  --json benchmarks/results/bench_real.json
	$(QGIS_ENV) $(PY) benchmarks/bench_timeseries.py --markdown benchmarks/results/bench_timeseries.md \
	  --json benchmarks/results/bench_timeseries.json

clean:
	rm -rf $(BUILD) dist $(VENV)
