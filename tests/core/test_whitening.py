"""core.whitening: the SLC spectrum whitened so that detected speckle is white."""
import numpy as np
import pytest

from sar_despeckle_plugin.core import whitening as W
from sar_despeckle_plugin.core.errors import InvalidInputError
from sar_despeckle_plugin.core.speckle import correlated_slc, psf_sigma_for_correlation


def windowed_slc(shape, band, alpha, doppler=0.0, seed=0):
    """White circular Gaussian SLC whose spectrum is a raised-cosine (Hamming-like, weight
    ``alpha``) window over ``band`` of each axis, the azimuth one centred at ``doppler`` cycles
    per pixel: how a focuser shapes real SLC spectra."""
    rng = np.random.default_rng(seed)
    z = (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)) / np.sqrt(2)

    def win(n, centre):
        d = ((np.fft.fftfreq(n) - centre + 0.5) % 1) - 0.5
        return np.where(np.abs(d) < band / 2, alpha + (1 - alpha) * np.cos(2 * np.pi * d / band), 0)

    z = np.fft.ifft2(np.fft.fft2(z) * win(shape[0], doppler)[:, None] * win(shape[1], 0.0)[None, :])
    return z / np.sqrt(np.mean(np.abs(z) ** 2))


def lag1(intensity):
    i = intensity - intensity.mean()
    v = np.mean(i * i)
    return np.mean(i[:, 1:] * i[:, :-1]) / v, np.mean(i[1:] * i[:-1]) / v


def blocks_of(z, n=64):
    return [z[r:r + n, c:c + n] for r in range(0, z.shape[0] - n + 1, n) for c in range(0, z.shape[1] - n + 1, n)]


@pytest.mark.parametrize("name,z", [
    ("gaussian psf, correlation 0.3", correlated_slc(np.ones((512, 512)), psf_sigma_for_correlation(0.3), 1)),
    ("gaussian psf, 0.3 range / 0.4 azimuth", correlated_slc(
        np.ones((512, 512)), (psf_sigma_for_correlation(0.4), psf_sigma_for_correlation(0.3)), 2)),
    ("hamming 0.75 over 85 % of the band", windowed_slc((512, 512), 0.85, 0.75)),
    ("the same with a Doppler centroid of 0.2", windowed_slc((512, 512), 0.85, 0.75, doppler=0.2)),
])
def test_whitening_decorrelates_simulated_slc_speckle(name, z):
    """Lag-1 intensity correlation < 0.05 after whitening. (A Gaussian PSF's spectrum falls
    smoothly to nothing; past a correlation of ~0.45 its tails would need more than the x4.5 gain
    limit, and some correlation stays: 0.5 gives 0.1.)"""
    before = lag1(np.abs(z) ** 2)
    assert max(before) > 0.19, name
    white = W.design(blocks_of(z))
    zw = W.apply_taps(z, white)
    after = lag1(np.abs(zw) ** 2)
    assert max(abs(a) for a in after) < 0.05, (name, before, after)
    # the mean power (the radiometry) is kept
    assert np.mean(np.abs(zw) ** 2) == pytest.approx(np.mean(np.abs(z) ** 2), rel=0.03)


def test_band_limited_data_keeps_its_gap():
    """Oversampled data (80 % of the band, Hamming 0.54) has nothing outside its band: the gap
    stays empty, so some correlation remains (sinc of the band), far less than before."""
    z = windowed_slc((512, 512), 0.8, 0.54, seed=3)
    white = W.design(blocks_of(z))
    assert 0.75 < white.band_x < 0.9 and 0.75 < white.band_y < 0.9
    before, after = max(lag1(np.abs(z) ** 2)), max(lag1(np.abs(W.apply_taps(z, white)) ** 2))
    assert before > 0.5 and after < 0.2


def test_a_tile_with_its_margins_gives_the_whole_image_result():
    z = windowed_slc((300, 260), 0.85, 0.75, seed=4)
    white = W.design(blocks_of(z))
    full = W.apply_taps(z, white)
    h = white.half
    inner = W.apply_taps(z[100 - h:200 + h, 50 - h:180 + h], white, margins=(h, h, h, h))
    np.testing.assert_array_equal(inner, full[100:200, 50:180])
    corner = W.apply_taps(z[:100 + h, :80 + h], white, margins=(0, h, 0, h))  # the raster's corner
    np.testing.assert_allclose(corner, full[:100, :80], atol=1e-12)


def test_errors():
    with pytest.raises(InvalidInputError, match="complex"):
        W.spectral_envelope([np.ones((64, 64))], 1)
    with pytest.raises(InvalidInputError, match="no valid block"):
        W.spectral_envelope([np.ones((16, 16), complex)], 1)
