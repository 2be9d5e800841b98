#!/usr/bin/env bash
# Despeckle the bundled Sentinel-1 VH crop through qgis_process, headless, with every parameter
# left at its default (Auto: the plugin measures the speckle and picks the Sentinel-1 GRD model),
# then draw before/after.
# Called by `make demo` (which first builds the plugin folder build/sar_despeckle_plugin).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
export QT_QPA_PLATFORM=offscreen
export QGIS_PLUGINPATH="$ROOT/build"
export PYTHONPATH="$(echo "$ROOT"/.venv/lib/python3*/site-packages)"
QGIS_PROCESS=$(command -v qgis_process.bin || echo /usr/bin/qgis_process.bin)

IN="$ROOT/demo/data/s1_vh_city_20171021.tif"
OUT_DIR="$ROOT/demo/out"
OUT="$OUT_DIR/s1_vh_city_20171021_despeckled.tif"
mkdir -p "$OUT_DIR"

# Enabling is stored in the QGIS profile; "already enabled" is fine.
"$QGIS_PROCESS" plugins enable sar_despeckle_plugin >/dev/null 2>&1 || true

echo "Despeckling $IN (500 x 500, Sentinel-1 GRD VH, single date, linear intensity)..."
"$QGIS_PROCESS" run sardespeckle:despeckle -- \
    INPUT="$IN" OUTPUT="$OUT" 2>&1 | grep -v -E "XDG_RUNTIME_DIR|setapi"

"$ROOT/.venv/bin/python" "$ROOT/demo/make_figure.py" "$IN" "$OUT" "$OUT_DIR/before_after.png"
gdalinfo "$OUT" | grep -E "Size is|SAR_DESPECKLE_MODEL=|SAR_DESPECKLE_MODEL_CHOICE|SAR_DESPECKLE_ESTIMATED|SAR_DESPECKLE_MEAN_GAIN|NoData" || true
echo "Done: $OUT"
