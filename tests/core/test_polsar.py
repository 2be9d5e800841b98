import numpy as np
import pytest

from sar_despeckle_plugin.core.errors import InvalidInputError
from sar_despeckle_plugin.core.polsar import (
    MatrixType, band_names, diagonal_indices, invalid_pixels, resolve_matrix,
)


def test_band_names_follow_polsarpro():
    assert band_names(MatrixType.C2) == ("C11", "C12_real", "C12_imag", "C22")
    assert band_names(MatrixType.T3)[0] == "T11" and band_names(MatrixType.T3)[-1] == "T33"
    assert band_names(MatrixType.C3)[5] == "C22"
    assert diagonal_indices(9) == (0, 5, 8) and diagonal_indices(4) == (0, 3)


def test_resolve_matrix():
    assert resolve_matrix(0, 4) == MatrixType.C2
    assert resolve_matrix(0, 9, ("T11", "T12_real")) == MatrixType.T3
    assert resolve_matrix(0, 9, ("C11",)) == MatrixType.C3
    assert resolve_matrix(0, 9) == MatrixType.C3
    assert resolve_matrix(3, 9, ("C11",)) == MatrixType.T3  # explicit wins
    with pytest.raises(InvalidInputError, match="needs 4 \\(C2\\) or 9 \\(C3/T3\\) bands, got 7"):
        resolve_matrix(0, 7)
    with pytest.raises(InvalidInputError, match="C2 raster has 4 bands, this one has 9"):
        resolve_matrix(1, 9)


def test_invalid_pixels():
    c = np.zeros((4, 2, 3))
    c[0] = c[3] = 1.0
    c[0, 0, 0] = 0.0        # one zero power: allowed (single-look data has them)
    c[:, 0, 1] = 0.0        # the zero matrix: no power at all
    c[1, 1, 1] = np.nan     # broken off-diagonal
    c[3, 1, 2] = -1.0       # negative power
    np.testing.assert_array_equal(invalid_pixels(c), [[False, True, False], [False, True, True]])
