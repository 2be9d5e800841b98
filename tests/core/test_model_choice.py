"""core.model_choice: the Auto model from the measured speckle and the cards' Auto keys."""
import pytest

from onnx_models import card
from sar_despeckle_plugin.core.errors import ModelCardError
from sar_despeckle_plugin.core.model_card import ModelCard
from sar_despeckle_plugin.core.model_choice import AutoFit, choose_model, looks_disagree


def auto_card(name, looks, corr, priority=0, family="", architecture="test graph"):
    extra = {"auto_looks": looks, "auto_correlation": corr, "auto_priority": str(priority)}
    if family:
        extra["sensor_family"] = family
    # through the metadata, as the plugin reads a file's card
    return ModelCard.from_metadata(card(name, extra=extra, architecture=architecture).to_metadata())


CARDS = [
    card("no-auto-keys"),
    auto_card("white-1", "0.3,1.3", "0,0.15", 10),
    auto_card("white-1-int8", "0.3,1.3", "0,0.15", 5),
    auto_card("corr-1", "0.3,1.3", "0.15,1", 10),
    auto_card("grd", "1.3,12", "0.15,1", 10, "Sentinel-1 GRD"),
    auto_card("white-multi", "1.3,12", "0,0.15", 10),
    None,  # a file that could not be read
]


@pytest.mark.parametrize("looks,corr,name", [
    (1.0, 0.05, "white-1"),        # white single-look: the float32 file before its int8 copy
    (0.9, 0.45, "corr-1"),         # real single-look detected data
    (2.0, 0.5, "grd"),             # Sentinel-1 GRD as measured (ENL 1.5-4, correlation 0.45-0.8)
    (4.4, 0.02, "white-multi"),
    (30.0, 0.6, "grd"),            # outside every region: the nearest
    (0.1, 0.05, "white-1"),
])
def test_choice(looks, corr, name):
    c = choose_model(CARDS, looks, corr)
    assert c.name == name and CARDS[c.index].name == name
    assert f"{looks:.2f} looks" in c.reason


def test_reason_says_inside_or_nearest_and_the_sensor():
    assert "inside its range" in choose_model(CARDS, 2.0, 0.5).reason
    assert "for Sentinel-1 GRD" in choose_model(CARDS, 2.0, 0.5).reason
    assert "nearest to its range" in choose_model(CARDS, 30.0, 0.6).reason


def test_prefer_float_takes_a_float32_file_that_fits_as_well():
    """On a GPU an int8 file brings no speed: a float32 card that fits as well wins whatever the
    priorities; an int8 card that alone fits (or fits better) is still chosen."""
    q = "UNet; int8 (onnxruntime static quantisation, QDQ)"
    cards = [auto_card("white-1", "0.3,1.3", "0,0.15", 10), auto_card("white-lite-int8", "0.3,1.3", "0,0.15", 15,
                                                                      architecture=q),
             auto_card("grd-int8", "1.3,12", "0.15,1", 5, architecture=q), auto_card("white-multi", "1.3,12", "0,0.15", 10)]
    assert choose_model(cards, 1.0, 0.05).name == "white-lite-int8"
    assert choose_model(cards, 1.0, 0.05, prefer_float=True).name == "white-1"
    assert choose_model(cards, 3.0, 0.6, prefer_float=True).name == "grd-int8"
    assert choose_model(cards[1:3], 1.0, 0.05, prefer_float=True).name == "white-lite-int8"


def test_distance():
    fit = AutoFit.of(CARDS[4])
    assert fit.distance(2.0, 0.5) == 0
    assert fit.distance(24.0, 0.5) == pytest.approx(0.6931, abs=1e-4)      # log(24/12)
    assert fit.distance(2.0, 0.05) == pytest.approx(0.1 * 4.0546, abs=1e-3)  # 0.1 of correlation ~ x1.5 looks


def test_bad_or_missing_keys():
    with pytest.raises(ModelCardError, match="no bundled model"):
        choose_model([card("x"), None], 1, 0)
    with pytest.raises(ModelCardError, match="auto_looks"):
        AutoFit.of(auto_card("bad", "1", "0,1"))
    with pytest.raises(ModelCardError, match="auto_correlation"):
        AutoFit.of(auto_card("bad", "1,2", "0.5,0.2"))
    assert AutoFit.of(card("x")) is None


def test_looks_disagree():
    assert looks_disagree(4.4, 1.0) and looks_disagree(1.0, 2.0)
    assert not looks_disagree(4.4, 3.5) and not looks_disagree(1.0, 1.2) and not looks_disagree(0, 1)


def test_a_float32_file_dequantised_from_an_int8_one_is_not_int8():
    """training.dequantize names its source int8 file in the architecture: that is no int8 note."""
    from sar_despeckle_plugin.core.model_choice import is_int8
    q = auto_card("q", "0.3,1.3", "0,0.15", architecture="UNet(levels=3); int8 (onnxruntime static quantisation)")
    f = auto_card("f", "0.3,1.3", "0,0.15", architecture="UNet(levels=3); float32 weights dequantised from the "
                                                          "int8 file x_int8.onnx (sha256 ab); activations float32")
    assert is_int8(q) and not is_int8(f) and not is_int8(auto_card("p", "0.3,1.3", "0,0.15"))
    assert choose_model([q, f], 1.0, 0.05).name == "q"  # priorities equal: the first
    assert choose_model([q, f], 1.0, 0.05, prefer_float=True).name == "f"


def test_cpus_without_vnni_use_the_cards_no_vnni_priority():
    """Without VNNI the int8 files gain 1.4 x instead of 2 x: a float32 card that ranks itself higher
    there (``auto_priority_no_vnni``) wins; cards without the key keep their priority, a GPU
    (``prefer_float``) ignores the key, and the distance still comes first."""
    q = "UNet; int8 (onnxruntime static quantisation, QDQ)"
    small = ModelCard.from_metadata(card("white-small", extra={
        "auto_looks": "0.3,1.3", "auto_correlation": "0,0.15", "auto_priority": "5",
        "auto_priority_no_vnni": "16"}).to_metadata())
    cards = [auto_card("white-1", "0.3,1.3", "0,0.15", 10), auto_card("white-lite-int8", "0.3,1.3", "0,0.15", 15,
                                                                      architecture=q),
             small, auto_card("corr-int8", "0.3,1.3", "0.15,1", 20, architecture=q)]
    assert AutoFit.of(small).priority_on(True) == 16 and AutoFit.of(small).priority_on(False) == 5
    assert AutoFit.of(cards[0]).priority_on(True) == 10
    assert choose_model(cards, 1.0, 0.05).name == "white-lite-int8"
    assert choose_model(cards, 1.0, 0.05, no_vnni=True).name == "white-small"
    assert choose_model(cards, 0.9, 0.45, no_vnni=True).name == "corr-int8"      # no key: as before
    assert choose_model(cards, 1.0, 0.05, prefer_float=True, no_vnni=True).name == "white-1"
    assert choose_model(cards[:2], 1.0, 0.05, no_vnni=True).name == "white-lite-int8"
    bad = ModelCard.from_metadata(card("bad", extra={"auto_looks": "0.3,1.3", "auto_correlation": "0,0.15",
                                                     "auto_priority_no_vnni": "fast"}).to_metadata())
    with pytest.raises(ModelCardError, match="auto_priority_no_vnni"):
        AutoFit.of(bad)
