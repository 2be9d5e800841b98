"""Pure-numpy core of sar-despeckle: transforms, tiling, speckle statistics, model cards.

Nothing here imports QGIS, GDAL, onnxruntime or torch, so that the training code and the
tests can use it anywhere.
"""
