"""Image-quality metrics for the despeckling benchmarks (no torch).

Both metrics compare an *estimate* with a *reference* given as amplitude images (sqrt of
intensity), as in the TerraSAR-X despeckling benchmark:

* :func:`psnr_amplitude`: PSNR in dB with peak = 99th percentile of the reference
  (``training.evaluate.psnr_amplitude``, re-exported).
* :func:`ssim`: the SSIM index of Wang, Bovik, Sheikh, Simoncelli, "Image quality assessment:
  from error visibility to structural similarity", IEEE TIP 13(4):600-612, 2004, with the
  paper's settings: an 11x11 circular-symmetric Gaussian window of standard deviation 1.5
  (normalised to sum 1), K1 = 0.01, K2 = 0.03, C1 = (K1 D)^2, C2 = (K2 D)^2.

  * D (``data_range``) defaults to the 99th percentile of the *reference*, the same peak as the
    PSNR (speckled amplitudes have a long bright tail, so the maximum would be an outlier).
    Because that default depends on the second argument, ``ssim(a, b)`` equals ``ssim(b, a)``
    only for an explicit ``data_range``.
  * Borders: the map is computed on the 'valid' region only (the positions where the whole
    11x11 window lies inside the image, as in the authors' reference MATLAB code), so the
    map is (H - 10) x (W - 10) and no padding enters the statistics. Images must therefore
    be at least 11x11.
  * Local statistics are Gaussian-weighted means, variances and covariance with weights that
    sum to 1 (population form: sigma_x^2 = G*(x^2) - mu_x^2), in float64.
  * The returned value is the mean of the SSIM map. The map itself is the plugin's
    (``core.assessment.ssim_map``, which the assessment algorithm uses with a 7x7 window).
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

from sar_despeckle_plugin.core.assessment import ssim_kernel
from sar_despeckle_plugin.core.assessment import ssim_map as ssim_map_core
from .evaluate import psnr_amplitude  # noqa: F401  (one definition, re-exported)

WINDOW = 11
SIGMA = 1.5


def _check_pair(estimate, reference) -> Tuple[np.ndarray, np.ndarray]:
    x = np.asarray(estimate, dtype=np.float64)
    y = np.asarray(reference, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 2:
        raise ValueError(f"SSIM needs two 2-D images of the same shape, got {x.shape} and {y.shape}")
    if min(x.shape) < WINDOW:
        raise ValueError(f"SSIM needs images of at least {WINDOW}x{WINDOW}, got {x.shape}")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("SSIM needs finite images")
    return x, y


def _data_range(reference: np.ndarray, data_range: Optional[float]) -> float:
    d = float(np.percentile(reference, 99)) if data_range is None else float(data_range)
    if not (np.isfinite(d) and d > 0):
        raise ValueError(f"the SSIM data range must be a finite number > 0, got {d}")
    return d


def ssim_map(estimate: np.ndarray, reference: np.ndarray, data_range: Optional[float] = None) -> np.ndarray:
    """SSIM map on the 'valid' region, (H - 10, W - 10): the plugin's
    :func:`sar_despeckle_plugin.core.assessment.ssim_map` with the standard 11 x 11 window."""
    x, y = _check_pair(estimate, reference)
    r = WINDOW // 2
    m = ssim_map_core(y, x, _data_range(y, data_range), kernel=ssim_kernel(SIGMA, r))
    return m[r:-r, r:-r]


def ssim(estimate: np.ndarray, reference: np.ndarray, data_range: Optional[float] = None) -> float:
    """Mean SSIM (Wang et al. 2004) over the 'valid' map; data_range defaults to the 99th
    percentile of the reference (the PSNR's peak)."""
    return float(np.mean(ssim_map(estimate, reference, data_range)))
