"""Spectral whitening of single-look complex (SLC) data: decorrelate the speckle before detection.

A SAR focuser leaves the spectrum of an SLC image shaped by the range and azimuth processing
windows (Hamming, Kaiser...) and by oversampling, so neighbouring pixels share scatterers and
the speckle of |z|^2 is spatially correlated (lag-1 intensity correlation 0.1-0.6). The
despeckling networks that know only white speckle then keep blobs of it. Because the scene's
own reflectivity spectrum is, on average over a raster, nearly flat compared with the
processing windows, the mean power spectrum along each axis is the window's; dividing it out
(Lee & Pottier, Dalsasso et al. 2020 'SAR image despeckling by deep neural networks: from a
pre-trained model to an end-to-end training') makes the speckle white at the same pixel
spacing, so the grid and the georeferencing stay the same.

Steps:

1. :func:`spectral_envelope`: the power spectrum of 1-D FFTs of length ``n`` along one axis,
   averaged over the other axis, normalised per block (every block weighs the same, whatever
   its brightness), median over the blocks, lightly smoothed.
2. :func:`whitening_taps`: the zero-phase inverse square root of the envelope inside the
   band (bins whose power is at least ``floor`` times the peak); outside the band (empty,
   oversampled frequencies: thermal noise only) the gain is 0. Turned into a short FIR filter
   (``2 * half + 1`` complex taps, Kaiser-tapered) scaled so that the mean power of data with
   this envelope is unchanged: the despeckled intensity keeps its radiometry.
3. :func:`apply_taps`: separable filtering, rows then columns; at the raster's border the data
   is mirrored, inside it tiles read a margin of real context.

A Doppler centroid (an azimuth spectrum off zero frequency) is handled: the envelope is not
assumed symmetric, so the taps are complex.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Optional

import numpy as np

from .errors import InvalidInputError

FFT_LENGTH = 64
HALF_TAPS = 12          # filter length 2 * 12 + 1 = 25 taps per axis
FLOOR = 0.005          # bins below FLOOR x peak power are out of band (gain 0): a Hamming
                        # window's edge (0.08 in amplitude) is still in band
MAX_GAIN_FLOOR = 0.05  # the gain is at most that of a bin at this share of the peak power (x4.5
                       # in amplitude): a thin spectral notch (oversampling gap) is not blown up
KAISER_BETA = 4.0


def spectral_envelope(blocks: Iterable[np.ndarray], axis: int, n: int = FFT_LENGTH) -> np.ndarray:
    """Normalised mean power spectrum (length ``n``, mean 1, FFT order) of complex blocks along
    ``axis`` (1 = along a row, between columns: range; 0 = along a column: azimuth).

    Each block must be at least ``n`` long along ``axis`` and hold finite values; it is cut into
    segments of ``n`` along that axis."""
    spectra = []
    for b in blocks:
        z = np.moveaxis(np.asarray(b), axis, -1)
        if not np.iscomplexobj(z):
            raise InvalidInputError("spectral whitening needs complex (SLC) values")
        if z.shape[-1] < n or not np.isfinite(z).all():
            continue
        segs = z[..., :(z.shape[-1] // n) * n].reshape(-1, n)
        p = (np.abs(np.fft.fft(segs, axis=-1)) ** 2).mean(axis=0)
        if p.mean() > 0:
            spectra.append(p / p.mean())
    if not spectra:
        raise InvalidInputError(f"cannot estimate the SLC spectrum: no valid block of {n} pixels")
    env = np.median(np.stack(spectra), axis=0)
    env = (np.roll(env, 1) + 2 * env + np.roll(env, -1)) / 4  # light circular smoothing
    return env / env.mean()


@dataclass(frozen=True)
class Whitening:
    """Separable complex FIR whitening: ``taps_y`` filter along columns (between rows, azimuth),
    ``taps_x`` along rows (between columns, range); both of length 2 * half + 1."""
    taps_y: np.ndarray
    taps_x: np.ndarray
    band_y: float           # share of the spectrum kept in each axis
    band_x: float

    @property
    def half(self) -> int:
        return max(len(self.taps_y), len(self.taps_x)) // 2

    def describe(self) -> str:
        return (f"SLC spectrum whitened ({len(self.taps_x)}-tap filters; band kept: {self.band_x:.0%} "
                f"of the range spectrum, {self.band_y:.0%} of the azimuth spectrum)")


def whitening_taps(envelope: np.ndarray, half: int = HALF_TAPS, floor: float = FLOOR) -> tuple:
    """(complex taps of length 2 * half + 1, share of the band kept) for an envelope of
    :func:`spectral_envelope`."""
    env = np.asarray(envelope, dtype=np.float64)
    n = env.size
    if n < 2 * half + 1:
        raise InvalidInputError(f"the envelope ({n} bins) is shorter than the filter ({2 * half + 1} taps)")
    band = env >= floor * env.max()
    gain = np.zeros(n)
    gain[band] = 1.0 / np.sqrt(np.maximum(env[band], MAX_GAIN_FLOOR * env.max()))
    h = np.fft.ifft(gain)                          # impulse response, tap 0 at index 0
    taps = np.concatenate([h[-half:], h[:half + 1]])   # taps -half..half
    taps = taps * np.kaiser(2 * half + 1, KAISER_BETA)
    # scale so that data whose spectrum is ``env`` keeps its mean power
    response = _response(taps, n)
    taps = taps * np.sqrt(np.sum(env) / np.sum(np.abs(response) ** 2 * env))
    return taps, float(band.mean())


def _response(taps: np.ndarray, n: int) -> np.ndarray:
    half = len(taps) // 2
    h = np.zeros(n, dtype=complex)
    h[:half + 1] = taps[half:]
    h[-half:] = taps[:half]
    return np.fft.fft(h)


def design(blocks: Iterable[np.ndarray], n: int = FFT_LENGTH, half: int = HALF_TAPS) -> Whitening:
    """The whitening filters of a raster from sample blocks (complex, at least n x n)."""
    blocks = [np.asarray(b) for b in blocks]
    ty, by = whitening_taps(spectral_envelope(blocks, 0, n), half)
    tx, bx = whitening_taps(spectral_envelope(blocks, 1, n), half)
    # The n-point envelope is the true spectrum blurred by the periodogram's kernel, so the
    # scaling above keeps the mean power only to a few per cent: measure it on the sample.
    w = Whitening(ty, tx, by, bx)
    p_in = p_out = 0.0
    h = w.half
    for b in blocks:
        if np.isfinite(b).all() and min(b.shape) > 2 * h + 8:  # interiors: no mirrored border
            p_in += float(np.mean(np.abs(b[h:-h, h:-h]) ** 2))
            p_out += float(np.mean(np.abs(apply_taps(b, w, margins=(h, h, h, h))) ** 2))
    if p_out > 0 and p_in > 0:
        tx = tx * np.sqrt(p_in / p_out)
    return Whitening(ty, tx, by, bx)


def _filter_axis(z: np.ndarray, taps: np.ndarray, axis: int) -> np.ndarray:
    """'valid' convolution of ``z`` with ``taps`` along ``axis`` (the result is shorter by
    ``len(taps) - 1``)."""
    half = len(taps) // 2
    z = np.moveaxis(z, axis, -1)
    n = z.shape[-1] - 2 * half
    out = np.zeros(z.shape[:-1] + (n,), dtype=np.complex128)
    # y[i] = sum_k taps[k] z[i - (k - half)]  (convolution; taps[half] is tap 0)
    for k, t in enumerate(taps):
        s = 2 * half - k
        out += t * z[..., s:s + n]
    return np.moveaxis(out, -1, axis)


def apply_taps(z: np.ndarray, whitening: Whitening, margins: Optional[tuple] = None) -> np.ndarray:
    """Whiten complex ``z`` (H, W).

    ``margins`` = (top, bottom, left, right): how many of ``z``'s outer rows/columns are context
    read beyond the wanted window (at least ``whitening.half`` wherever the raster goes on); the
    result is the wanted window only. Where a margin is smaller than the filter's half length
    (the raster's own border), the data is mirrored. Default: no context, mirror everywhere.
    """
    z = np.asarray(z, dtype=np.complex128)
    h = whitening.half
    top, bottom, left, right = margins or (0, 0, 0, 0)
    # mirror where the given context is short, so that every output pixel has full support
    pads = [(max(0, h - top), max(0, h - bottom)), (max(0, h - left), max(0, h - right))]
    if any(p for pair in pads for p in pair):
        # a plain mirror continues the data smoothly (a conjugated mirror would keep a Doppler
        # centroid's side but leaves a phase jump that the filter's high-frequency gain amplifies)
        z = np.pad(z, pads, mode="symmetric")
        top, bottom = top + pads[0][0], bottom + pads[0][1]
        left, right = left + pads[1][0], right + pads[1][1]
    z = z[top - h:z.shape[0] - bottom + h, left - h:z.shape[1] - right + h]
    y = _filter_axis(z, _centre(whitening.taps_y, h), 0)
    return _filter_axis(y, _centre(whitening.taps_x, h), 1)


def _centre(taps: np.ndarray, half: int) -> np.ndarray:
    """Zero-pad symmetric taps to length 2 * half + 1."""
    extra = half - len(taps) // 2
    return np.pad(taps, (extra, extra)) if extra > 0 else taps
