"""Offline training of the sar-despeckle ONNX networks (PyTorch; never imported by the plugin).

Modules: :mod:`training.data` (clean references, patches, simulated speckle),
:mod:`training.dncnn` (the network), :mod:`training.train_dncnn` (the training command),
:mod:`training.export` (torch -> ONNX with a model card) and :mod:`training.evaluate`
(PSNR on the TerraSAR-X validation pairs against a 5x5 boxcar).
"""
