"""core.estimation: equivalent number of looks and speckle correlation, on simulated and real data."""
import numpy as np
import pytest
from osgeo import gdal

from conftest import DATA, DEMO_SAMPLE, shared
from sar_despeckle_plugin.core.errors import InvalidInputError
from sar_despeckle_plugin.core.estimation import (
    PHYSICAL_MIN_LOOKS, block_origins, estimate_speckle, grid_blocks, homogeneous_mask, inverse_trigamma,
)
from sar_despeckle_plugin.core.speckle import gamma_speckle
from sar_despeckle_plugin.core.transforms import trigamma
from sar_despeckle_plugin.core.speckle import correlated_speckle, psf_sigma_for_correlation

SHAPE = (512, 512)
# 4.4 looks from whole correlated looks: weights (1, 1, 1, 1, w) give an ENL of
# (4 + w)^2 / (4 + w^2) = 4.4 for w = 0.2207
W44 = (8 - np.sqrt(64 - 4 * 3.4 * 1.6)) / (2 * 3.4)


def scene():
    """Piecewise-smooth reflectivity: four levels over 2 decades, a sinusoidal slope, a dark strip
    and a textured (log-normal) quarter, so that not every block is homogeneous."""
    rng = np.random.default_rng(3)
    r = np.ones(SHAPE)
    r[:, 256:] = 5.0
    r[200:300, 100:400] *= 0.05
    yy, xx = np.mgrid[0:SHAPE[0], 0:SHAPE[1]]
    r *= np.exp(0.5 * np.sin(xx / 80.0))
    r[384:, :256] *= np.exp(rng.normal(0, 0.7, (128, 256)))
    return r


def speckle(looks, rho_x, rho_y, rng):
    """Multiplicative speckle with a known ENL (``looks``) and lag-1 intensity correlations."""
    if rho_x == rho_y == 0:
        return gamma_speckle(SHAPE, looks, rng)
    psf = (psf_sigma_for_correlation(rho_y), psf_sigma_for_correlation(rho_x))
    if float(looks).is_integer():
        return correlated_speckle(SHAPE, int(looks), psf, rng)
    assert looks == 4.4
    weights = [1, 1, 1, 1, W44]
    s = sum(w * correlated_speckle(SHAPE, 1, psf, rng) for w in weights)
    return s / sum(weights)


def test_inverse_trigamma():
    for y in (1e-3, 0.05, 0.3, 1.0, np.pi ** 2 / 6, 10.0, 1e3):
        x = inverse_trigamma(y)
        assert trigamma(x) == pytest.approx(y, rel=1e-9)
    assert inverse_trigamma(np.pi ** 2 / 6) == pytest.approx(1.0, rel=1e-9)
    with pytest.raises(ValueError):
        inverse_trigamma(0.0)


def test_the_44_look_construction_has_44_looks():
    assert (4 + W44) ** 2 / (4 + W44 ** 2) == pytest.approx(4.4, rel=1e-9)


@pytest.mark.parametrize("looks", [1, 2, 4.4, 8])
@pytest.mark.parametrize("rho_x,rho_y", [(0.0, 0.0), (0.3, 0.3), (0.5, 0.3)])
def test_looks_and_correlation_of_simulated_speckle(looks, rho_x, rho_y):
    """Within 10 % for the looks (the issue's bar), 0.05 for the correlations, on a scene with
    slopes, a dark strip and a textured quarter."""
    if looks == 4.4 and rho_x == rho_y == 0:
        rng = np.random.default_rng(int(looks * 10))
        s = gamma_speckle(SHAPE, looks, rng)
    else:
        s = speckle(looks, rho_x, rho_y, np.random.default_rng(int(looks * 10 + rho_x * 100 + rho_y * 1000)))
    est = estimate_speckle(grid_blocks(scene() * s))
    assert est.looks == pytest.approx(looks, rel=0.10)
    assert est.corr_x == pytest.approx(rho_x, abs=0.05)
    assert est.corr_y == pytest.approx(rho_y, abs=0.05)
    assert est.correlation == max(est.corr_x, est.corr_y)
    assert est.reliable and est.homogeneous >= 0.6 * est.blocks
    # the textured quarter is not homogeneous: it does not count
    assert est.homogeneous < est.blocks or looks == 1


def test_texture_alone_does_not_drag_the_mode():
    """A scene that is half strongly textured (a log-normal field correlated over ~10 pixels, as
    fields, forests or relief are): a plain mean over all blocks would give far fewer looks; the
    mode of the block estimates keeps the homogeneous half's."""
    rng = np.random.default_rng(5)
    r = np.ones(SHAPE)
    field = np.fft.ifft2(np.fft.fft2(rng.normal(size=(512, 256))) * np.exp(
        -0.5 * (np.add.outer(np.fft.fftfreq(512) ** 2, np.fft.fftfreq(256) ** 2)) * (2 * np.pi * 6) ** 2)).real
    r[:, 256:] = np.exp(field / field.std())
    est = estimate_speckle(grid_blocks(r * gamma_speckle(SHAPE, 4, rng)))
    assert est.looks == pytest.approx(4, rel=0.1)


def test_homogeneous_blocks_of_a_mostly_textured_single_look_scene():
    """Three quarters gamma-textured single-look speckle: the measured looks fall under 1 and the
    band around them takes the textured blocks; anchored at one look (speckle alone never measures
    fewer) and narrowed to 0.1, the mask keeps the untextured quarter and little else."""
    rng = np.random.default_rng(3)
    n, c0 = 256, 64
    r = np.ones((n, n))
    r[:, c0:] = rng.gamma(2.0, 0.5, size=(n // 4, n // 4)).repeat(4, 0).repeat(4, 1)[:, c0:]
    noisy = r * rng.exponential(size=(n, n))
    est = estimate_speckle(grid_blocks(noisy))
    assert est.looks < 0.9
    wide = homogeneous_mask(noisy, est)
    anchored = homogeneous_mask(noisy, est, band=0.1, min_looks=PHYSICAL_MIN_LOOKS)
    assert wide[:, c0:].mean() > 0.9           # nearly every textured block passes the wide band
    assert anchored[:, :c0].mean() > 0.8 and anchored[:, c0:].mean() < 0.1
    # above one look the anchor changes nothing
    multi = r[:, :c0].repeat(4, 1) * gamma_speckle((n, n), 4, rng)
    est4 = estimate_speckle(grid_blocks(multi))
    assert np.array_equal(homogeneous_mask(multi, est4, band=0.1, min_looks=PHYSICAL_MIN_LOOKS),
                          homogeneous_mask(multi, est4, band=0.1))


def test_nodata_blocks_and_small_images():
    rng = np.random.default_rng(6)
    img = gamma_speckle((128, 128), 2, rng)
    img[:, :64] = np.nan
    est = estimate_speckle(grid_blocks(img))
    assert est.looks == pytest.approx(2, rel=0.15)
    assert est.blocks < len(list(grid_blocks(img)))  # the nodata half was left out
    with pytest.raises(InvalidInputError, match="smaller than one estimation block"):
        list(grid_blocks(np.ones((20, 200))))
    with pytest.raises(InvalidInputError, match="valid pixels"):
        estimate_speckle(grid_blocks(np.full((64, 64), np.nan)))


def test_block_origins_cover_the_image_and_stay_bounded():
    o = block_origins(10000, 3000, 32, 400)
    assert 300 <= len(o) <= 420
    rows, cols = sorted({r for r, _ in o}), sorted({c for _, c in o})
    assert rows[0] == 0 and rows[-1] == 10000 - 32 and cols[0] == 0 and cols[-1] == 3000 - 32
    assert block_origins(40, 40, 32, 400) == [(4, 4)]  # too small for two: the centre one


# ------------------------------------------------------------------------------ real rasters

def _read(path):
    return gdal.Open(str(path)).ReadAsArray().astype(np.float64)


def test_real_sentinel1_grd_vh():
    """Sentinel-1 GRD VH (geocoded, near the noise floor): an ENL of about 2 and strongly
    correlated speckle (measured: hill 2.02 / 0.53, 0.46; city 1.51 / 0.60, 0.56)."""
    for path in (DATA / "s1_vh_hill_20171021.tif", DEMO_SAMPLE):
        est = estimate_speckle(grid_blocks(_read(path)))
        assert 1.4 < est.looks < 2.4
        assert 0.4 < est.correlation < 0.7 and min(est.corr_x, est.corr_y) > 0.4


def test_real_sentinel1_grd_vv_dates():
    """Single dates of the VV stack (not the sand positions): 2.4-3.9 looks measured, lag-1
    correlation about 0.8 (the data's README: "roughly 4-5 looks, spatially correlated")."""
    for pos in (9, 14):
        stack = np.load(shared("train", "s1_grd_vv_stack_12dates", f"zone9_patch{pos:02d}_VV_sigma0_linear_12dates.npy"))
        for d in (1, 6):
            est = estimate_speckle(grid_blocks(stack[d].astype(np.float64)))
            assert 2.0 < est.looks < 4.5 and est.correlation > 0.7


def test_real_single_look_complex_uavsar():
    """UAVSAR single-look complex crops: about one look; San Andreas speckle is correlated
    (0.24-0.33), Winnipeg's nearly white (0.11-0.15)."""
    folder = shared("test", "uavsar_slc")
    for f, (lo, hi) in {"SanAnd138_UAVSAR_L_HH_slc_150x400.npy": (0.2, 0.4),
                        "winnipeg_UAVSAR_L_HH_slc_250x250.npy": (0.05, 0.2)}.items():
        z = np.load(folder / f)
        est = estimate_speckle(grid_blocks(np.abs(z.astype(np.complex128)) ** 2))
        assert 0.6 < est.looks < 1.1
        assert lo < est.correlation < hi


def test_simulated_white_speckle_on_real_terrasar_references():
    """The TSX validation pairs: real TerraSAR-X references with white single-look speckle."""
    folder = shared("validate", "tsx_clean_noisy_pairs", "noisy")
    for f in sorted(folder.glob("*.npy")):
        est = estimate_speckle(grid_blocks(np.load(f).astype(np.float64) ** 2))
        assert est.looks == pytest.approx(1.0, rel=0.1)
        assert est.correlation < 0.13


def test_untextured_mask_is_absolute():
    """Pure single-look speckle passes (most blocks measure 0.95-1.06 looks) and a textured half
    does not, whatever the raster's measured looks; against 4 nominal looks, 4-look speckle passes."""
    from sar_despeckle_plugin.core.estimation import untextured_mask
    rng = np.random.default_rng(4)
    r = np.ones((256, 256))
    r[:, 128:] = rng.gamma(2.0, 0.5, size=(64, 64)).repeat(4, 0).repeat(4, 1)[:, 128:]
    m = untextured_mask(r * rng.exponential(size=r.shape))
    assert m[:, :128].mean() > 0.6 and m[:, 128:].mean() < 0.05
    assert untextured_mask(gamma_speckle((256, 256), 4, rng), looks=4.0).mean() > 0.6
    assert untextured_mask(gamma_speckle((256, 256), 4, rng), looks=8.0).mean() == 0.0


def test_blocks_at_once_match_block_by_block(rng):
    """block_stats_many (one matrix product for the complete blocks) gives block_stats' values to
    rounding, incomplete blocks (NaN, zeros) and constant ones (None) included."""
    from sar_despeckle_plugin.core.estimation import block_stats, block_stats_many
    img = np.exp(rng.normal(0, 1, (96, 128)).cumsum(axis=1) / 30) * rng.exponential(1.0, (96, 128))
    img[5:9, 40:44] = np.nan        # a few invalid pixels: still a block (>= 90 % valid)
    img[70:80, 0:30] = 0.0          # too many: no statistics
    img[32:64, 96:128] = 3.0        # constant: no statistics
    blocks = np.stack([img[r:r + 32, c:c + 32] for r in range(0, 65, 16) for c in range(0, 97, 16)])
    one = [block_stats(b) for b in blocks]
    many = block_stats_many(blocks)
    assert [s is None for s in many] == [s is None for s in one]
    assert sum(s is None for s in many) >= 3 and sum(s is not None for s in many) >= 20
    for a, b in zip(one, many):
        if a is not None:
            assert (b.k2, b.corr_x, b.corr_y) == pytest.approx((a.k2, a.corr_x, a.corr_y), rel=1e-9, abs=1e-12)
    assert block_stats_many(np.zeros((0, 32, 32))) == []
