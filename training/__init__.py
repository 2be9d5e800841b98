"""Offline training of the sar-despeckle ONNX networks (PyTorch; never imported by the plugin).

``python -m training {train,export,evaluate,quantize,smoke}`` (:mod:`training.cli`) trains a
configuration of ``training/configs/*.yaml`` (:mod:`training.config`) with one loop
(:mod:`training.trainer`): strategies in :mod:`training.data` (supervised patches, simulated
white or correlated speckle, Sentinel-1 stacks) and :mod:`training.strategies` (pairs, masking);
networks in :mod:`training.dncnn` and :mod:`training.unet`; losses in :mod:`training.losses`.
:mod:`training.export` writes ONNX with the model card, :mod:`training.evaluate` measures it on
the validation data through the plugin's own pipeline, :mod:`training.quantize` makes int8
versions, :mod:`training.metrics` holds PSNR/SSIM. :mod:`training.gaussian` trains MuLog's
Gaussian denoiser and :mod:`training.train_dncnn` is the older DnCNN-only command that made the
first two bundled models.
"""
