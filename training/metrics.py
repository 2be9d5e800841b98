"""Image-quality metrics for the despeckling benchmarks (numpy only: no torch, no scipy).

Both metrics compare an *estimate* with a *reference* given as amplitude images (sqrt of
intensity), as in the TerraSAR-X despeckling benchmark:

* :func:`psnr_amplitude`: PSNR in dB with peak = 99th percentile of the reference (the same
  definition as ``training.evaluate.psnr_amplitude``; the test suite checks they agree).
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
  * The returned value is the mean of the SSIM map.
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

WINDOW = 11
SIGMA = 1.5
K1 = 0.01
K2 = 0.03


def psnr_amplitude(estimate: np.ndarray, reference: np.ndarray) -> float:
    """PSNR in dB on amplitude, peak = 99th percentile of the reference.

    10 log10(peak^2 / MSE), MSE over all pixels in float64 (``inf`` when identical)."""
    ref = np.asarray(reference, dtype=np.float64)
    peak = float(np.percentile(ref, 99))
    mse = float(np.mean((np.asarray(estimate, dtype=np.float64) - ref) ** 2))
    if mse == 0.0:
        return float("inf")
    return float(10.0 * np.log10(peak * peak / mse))


def gaussian_window_1d(size: int = WINDOW, sigma: float = SIGMA) -> np.ndarray:
    """Normalised 1-D Gaussian taps; the 2-D window is their outer product (also sums to 1)."""
    r = (size - 1) / 2.0
    t = np.arange(size, dtype=np.float64) - r
    g = np.exp(-(t * t) / (2.0 * sigma * sigma))
    return g / g.sum()


def _filter_valid(a: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Separable correlation of a 2-D array with taps g, 'valid' region only (shrinks by len(g)-1)."""
    k = g.size
    h, w = a.shape
    rows = g[0] * a[:, 0:w - k + 1]
    for t in range(1, k):
        rows = rows + g[t] * a[:, t:t + w - k + 1]
    out = g[0] * rows[0:h - k + 1]
    for t in range(1, k):
        out = out + g[t] * rows[t:t + h - k + 1]
    return out


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


def ssim_components(estimate: np.ndarray, reference: np.ndarray,
                    data_range: Optional[float] = None) -> Tuple[np.ndarray, np.ndarray]:
    """The two factors of the SSIM map on the 'valid' region: luminance
    l = (2 mu_x mu_y + C1) / (mu_x^2 + mu_y^2 + C1) and contrast-structure
    cs = (2 sigma_xy + C2) / (sigma_x^2 + sigma_y^2 + C2); SSIM map = l * cs."""
    x, y = _check_pair(estimate, reference)
    d = _data_range(y, data_range)
    c1, c2 = (K1 * d) ** 2, (K2 * d) ** 2
    g = gaussian_window_1d()
    mx, my = _filter_valid(x, g), _filter_valid(y, g)
    sxx = _filter_valid(x * x, g) - mx * mx
    syy = _filter_valid(y * y, g) - my * my
    sxy = _filter_valid(x * y, g) - mx * my
    lum = (2.0 * mx * my + c1) / (mx * mx + my * my + c1)
    cs = (2.0 * sxy + c2) / (sxx + syy + c2)
    return lum, cs


def ssim_map(estimate: np.ndarray, reference: np.ndarray, data_range: Optional[float] = None) -> np.ndarray:
    """SSIM map, (H - 10, W - 10): luminance x contrast-structure (see the module docstring)."""
    lum, cs = ssim_components(estimate, reference, data_range)
    return lum * cs


def ssim(estimate: np.ndarray, reference: np.ndarray, data_range: Optional[float] = None) -> float:
    """Mean SSIM (Wang et al. 2004) over the 'valid' map; data_range defaults to the 99th
    percentile of the reference (the PSNR's peak)."""
    return float(np.mean(ssim_map(estimate, reference, data_range)))
