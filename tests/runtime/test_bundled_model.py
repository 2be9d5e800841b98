"""The bundled default model through onnxruntime and the pipeline, on real Sentinel-1 data."""
import json
from pathlib import Path

import numpy as np
import pytest
from osgeo import gdal

from conftest import DATA
from onnx_models import WithHalo
from sar_despeckle_plugin.core.speckle import simulate_intensity
from sar_despeckle_plugin.runtime.models import MANIFEST, MODELS_DIR, bundled_models
from sar_despeckle_plugin.runtime.onnx_denoiser import Device, OnnxDenoiser, file_sha256, read_card
from sar_despeckle_plugin.runtime.pipeline import despeckle_array


MODELS_README = Path(MODELS_DIR) / "README.md"


@pytest.fixture(scope="module")
def model(default_model_path):
    return OnnxDenoiser(default_model_path, Device.CPU)


@pytest.fixture(scope="module")
def clean():
    """A Sentinel-1 VV temporal mean (near speckle-free): the reference reflectivity."""
    return gdal.Open(str(DATA / "s1_vv_temporal_mean_834.tif")).ReadAsArray().astype(np.float64)


def psnr_amplitude(estimate, reference):
    peak = np.percentile(np.sqrt(reference), 99)
    return 10 * np.log10(peak ** 2 / np.mean((np.sqrt(estimate) - np.sqrt(reference)) ** 2))


def boxcar(intensity, size=5):
    p = size // 2
    x = np.pad(intensity, p, mode="reflect")
    return np.lib.stride_tricks.sliding_window_view(x, (size, size)).mean(axis=(2, 3))


def test_manifest_names_match_the_cards():
    models = bundled_models()
    assert sum(m.default for m in models) == 1
    for m in models:
        assert read_card(m.path).name == m.name, f"{m.file}: models.json and the card disagree"
    with open(MANIFEST) as fh:
        entries = json.load(fh)["models"]
    files = [e.get("file") for e in entries]
    # the MODEL enum is public: these indices never change
    assert files[:2] == ["dncnn_l1_general.onnx", "dncnn_l1to8_blind.onnx"]
    assert files[7] == "unet_l1_long.onnx" and entries[9] == {
        "auto": True, "name": "auto", "label": "Auto: the bundled model that fits the measured speckle (default)"}
    assert [m.index for m in models] == [i for i, e in enumerate(entries) if not e.get("auto")]



# A QComboBox is as wide as its longest item, and Processing's dialog is at least as wide as its
# widest parameter: the 189-character label model 17 had made the dialog about 1 450 pixels wide
# (wider than a 1366-pixel laptop screen) with a horizontal scrollbar. 90 characters fit the
# dialog at 1100 pixels without one (grabbed offscreen); the models README says the rest.
LABEL_MAX = 90


def test_model_list_labels_are_short_enough_for_the_dialog():
    from sar_despeckle_plugin.runtime.models import model_options
    labels = model_options()
    assert len(labels) == len(json.loads(Path(MANIFEST).read_text())["models"])
    too_long = [(len(s), s) for s in labels if len(s) > LABEL_MAX]
    assert not too_long, too_long
    # and each still says what the model is for, not only its name
    assert all(": " in s and len(s.split(": ", 1)[1]) >= 20 for s in labels), labels

@pytest.mark.parametrize("index,looks_range", [(0, (1.0, 1.0)), (1, (1.0, 8.0))])
def test_cards_are_complete(index, looks_range):
    m = bundled_models()[index]
    den = OnnxDenoiser(m.path, Device.CPU)
    c = den.card
    assert c.input_domain == "log_intensity" and c.debias and c.looks_range == looks_range
    assert c.receptive_field == 35  # DnCNN with 17 3x3 convolutions
    assert c.reproduce.startswith("python -m training.train_dncnn --device cpu --steps ")
    assert c.metrics["psnr_tsx_mean"] > c.metrics["psnr_tsx_boxcar5_mean"] + 2.5
    assert len(den.sha256) == 64 and den.sha256 == file_sha256(m.path)
    assert f"`{den.sha256}`" in (MODELS_README).read_text(), "models/README.md must list the sha256"


@pytest.mark.parametrize("name", ["unet-l1-long", "dncnn-l1-general-int8"])
def test_tile_size_does_not_change_the_result(name):
    """The DnCNN is translation-equivariant; the default U-Net pools 2x2 three times and is
    equivariant to shifts by multiples of 8 only, so the pipeline starts every tile at the same
    position modulo 8 (before that, tiles of 256 and 512 differed by a median 0.6 %, 99th
    percentile 7.6 %, on this crop). 128- and 256-pixel tiles then give the 512-pixel result, with
    the full halo (half the receptive field) to rounding; with the smaller halo the U-Net's card
    measured (40), within 0.4 %."""
    den = OnnxDenoiser({m.name: m for m in bundled_models()}[name].path, Device.CPU)
    full = WithHalo(den, None)
    noisy = gdal.Open(str(DATA / "s1_vh_hill_20171021.tif")).ReadAsArray().astype(np.float64)[:300, :280]
    ref = despeckle_array(noisy, full, tile_size=512)
    for tile in (128, 256):
        np.testing.assert_allclose(despeckle_array(noisy, full, tile_size=tile), ref, rtol=1e-4)
    assert den.card.tile_halo == (40 if name == "unet-l1-long" else 18)
    measured = despeckle_array(noisy, den, tile_size=512)
    for tile in (128, 256):
        assert np.abs(np.log(despeckle_array(noisy, den, tile_size=tile) / measured)).max() < 0.004


def test_beats_a_boxcar_on_simulated_single_look_speckle(model, clean):
    noisy = simulate_intensity(clean, 1, np.random.default_rng(7))
    out = despeckle_array(noisy, model, looks=1, tile_size=256)
    assert out.mean() / clean.mean() == pytest.approx(1.0, abs=0.03)  # measured 0.982
    # measured (unet-l1-long): 24.3 dB against 21.9 dB for a 5x5 boxcar
    assert psnr_amplitude(out, clean) - psnr_amplitude(boxcar(noisy), clean) > 1.5


def test_blind_model_on_white_multilook_speckle(clean):
    """Measured: 27.0 dB against 25.8 dB for a 5x5 boxcar at 4.4 looks; mean kept (0.987)."""
    blind = OnnxDenoiser(bundled_models()[1].path, Device.CPU)
    noisy = simulate_intensity(clean, 4.4, np.random.default_rng(7))
    out = despeckle_array(noisy, blind, looks=4.4, tile_size=256)
    assert out.mean() / clean.mean() == pytest.approx(1.0, abs=0.03)
    assert psnr_amplitude(out, clean) - psnr_amplitude(boxcar(noisy), clean) > 0.6


def test_the_array_api_scales_looks_as_the_algorithm_does(clean):
    """despeckle_array takes LOOKS as sardespeckle:despeckle does: the fixed 4.4-look GRD network
    (card key looks_scaling) on 2-look speckle with looks=2 has its input scaled to its training
    level, and recovers the image far better than run as trained (looks=0, the default), which
    takes the 2-look speckle for 4.4-look detail (through qgis_process on the S1 test crop: 22.39
    against 16.44 dB). Within the training range nothing changes."""
    entry = next(m for m in bundled_models() if m.name == "unet-l4-correlated-int8")
    l4 = OnnxDenoiser(entry.path, Device.CPU)
    noisy = simulate_intensity(clean, 2, np.random.default_rng(11))
    scaled = despeckle_array(noisy, l4, looks=2, tile_size=256)
    as_trained = despeckle_array(noisy, l4, tile_size=256)
    assert psnr_amplitude(scaled, clean) > psnr_amplitude(as_trained, clean) + 2.0
    np.testing.assert_array_equal(despeckle_array(noisy, l4, looks=4.4, tile_size=256), as_trained)


def test_keeps_the_mean_on_multilook_speckle(model, clean):
    """The single-look default on 4.4-look speckle: radiometry kept (measured 0.987), although it
    smooths more than needed there (24.0 dB, a 5x5 boxcar gets 25.8 dB)."""
    noisy = simulate_intensity(clean, 4.4, np.random.default_rng(7))
    out = despeckle_array(noisy, model, looks=4.4, tile_size=256)
    assert out.mean() / clean.mean() == pytest.approx(1.0, abs=0.03)
    assert psnr_amplitude(out, clean) > psnr_amplitude(noisy, clean) + 5


def test_cards_are_read_from_the_metadata_without_a_session(tmp_path):
    """read_card parses the file's metadata_props itself (the graph is skipped, not read): the
    same key/value pairs as the onnx package reads, for every bundled file; a file that is not a
    ModelProto gives None and read_card falls back to onnxruntime's error."""
    import onnx
    from sar_despeckle_plugin.core.errors import ModelError
    from sar_despeckle_plugin.runtime.onnx_denoiser import model_metadata
    for m in bundled_models():
        ref = {p.key: p.value for p in onnx.load(m.path, load_external_data=False).metadata_props}
        assert model_metadata(m.path) == ref and len(ref) > 5, m.file
    src = bundled_models()[0].path
    data = open(src, "rb").read()
    for name, content in (("cut.onnx", data[:len(data) // 2]), ("text.onnx", b"\x00\x01 not onnx"),
                          ("empty.onnx", b"")):
        path = tmp_path / name
        path.write_bytes(content)
        assert model_metadata(str(path)) is None, name
        with pytest.raises(ModelError, match="cannot load ONNX model"):
            read_card(str(path))


def test_the_time_series_ratio_networks():
    """models.json's ratio_models: names match the cards, int8 files with their sha256 in the models
    README, trained on ratio images (the card says so), and taken by Auto for single-look and
    multi-look ratio images alike (the network is blind to the looks)."""
    from sar_despeckle_plugin.core.model_choice import AutoFit, is_int8
    from sar_despeckle_plugin.runtime.models import RATIO, auto_choice
    models = bundled_models(RATIO)
    assert [m.name for m in models] == ["unet-ratio-int8"]
    readme = MODELS_README.read_text()
    for m in models:
        card = read_card(m.path)
        assert card.name == m.name and is_int8(card) and "synthetic time-series ratio images" in card.training_data
        assert f"`{file_sha256(m.path)}`" in readme, "models/README.md must list the sha256"
        assert AutoFit.of(card) is not None
    for looks, corr in ((1.0, 0.3), (4.5, 0.77), (30.0, 0.0)):
        assert auto_choice(looks, corr, kind=RATIO)[0].name == "unet-ratio-int8"
    # the despecklers' Auto never takes a ratio network
    assert not any(m.name.startswith("unet-ratio") for m in bundled_models())


def test_the_time_series_super_image_network():
    """models.json's super_models: names match the cards, int8 with its sha256 in the models README,
    blind over 1-64 looks of white and correlated speckle (the card says so), taken for the
    super-image of any stack (2 single-look dates to 60 GRD dates)."""
    from sar_despeckle_plugin.core.model_choice import AutoFit, is_int8
    from sar_despeckle_plugin.runtime.models import SUPER, auto_choice
    models = bundled_models(SUPER)
    assert [m.name for m in models] == ["unet-super-int8"]
    readme = MODELS_README.read_text()
    for m in models:
        card = read_card(m.path)
        assert card.name == m.name and is_int8(card) and card.looks_max == 64.0
        assert "log-uniform 1-64-look speckle, spatially correlated" in card.training_strategy
        assert f"`{file_sha256(m.path)}`" in readme, "models/README.md must list the sha256"
        assert AutoFit.of(card) is not None
    for looks, corr in ((2.0, 0.0), (5.0, 0.45), (22.0, 0.8), (264.0, 0.7)):
        assert auto_choice(looks, corr, kind=SUPER)[0].name == "unet-super-int8"
    assert not any(m.name.startswith("unet-super") for m in bundled_models())
