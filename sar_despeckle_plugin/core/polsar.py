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
    """(H, W) mask of pixels that are not a valid covariance: a non-finite channel or a
    diagonal term <= 0."""
    bad = ~np.isfinite(channels).all(axis=0)
    with np.errstate(invalid="ignore"):
        for d in diagonal_indices(channels.shape[0]):
            bad |= ~(channels[d] > 0)
    return bad
