import pytest

from onnx_models import card
from sar_despeckle_plugin.core.errors import ModelCardError
from sar_despeckle_plugin.core.model_card import REQUIRED_KEYS, ModelCard


def test_round_trip_through_metadata():
    original = card("dncnn", receptive_field=35, debias=True, metrics={"psnr": 25.5}, tile_size=256,
                    extra={"custom_key": "kept"})
    meta = original.to_metadata()
    assert all(isinstance(v, str) for v in meta.values())
    parsed = ModelCard.from_metadata(meta)
    assert parsed == original
    assert parsed.metrics == {"psnr": 25.5} and parsed.debias is True and parsed.norm_offset == "median"


@pytest.mark.parametrize("key", REQUIRED_KEYS)
def test_missing_key_is_named(key):
    meta = card().to_metadata()
    del meta[key]
    with pytest.raises(ModelCardError) as info:
        ModelCard.from_metadata(meta)
    assert info.value.key == key and f"'{key}'" in str(info.value)


@pytest.mark.parametrize("key,value", [
    ("looks", "zero"), ("looks", "-1"), ("norm_scale", "0"), ("receptive_field", "3.5"),
    ("debias", "maybe"), ("input_domain", "intensity"), ("metrics", "[1, 2]"), ("metrics", "{bad"),
    ("tile_size", "100"),
])
def test_bad_values_are_rejected(key, value):
    meta = card(size_multiple=16).to_metadata()
    meta[key] = value
    with pytest.raises(ModelCardError) as info:
        ModelCard.from_metadata(meta)
    assert info.value.key == key


def test_looks_range():
    assert card().looks_range == (1.0, 1.0)
    blind = ModelCard.from_metadata(card(looks_max=8.0).to_metadata())
    assert blind.looks_range == (1.0, 8.0)
    meta = card().to_metadata()
    meta["looks_max"] = "0.5"
    with pytest.raises(ModelCardError, match="looks_max"):
        ModelCard.from_metadata(meta)


def test_fixed_offset_is_a_number():
    meta = card(norm_offset=-2.5).to_metadata()
    assert ModelCard.from_metadata(meta).norm_offset == -2.5


def test_measured_halo():
    """``halo``: the tiling halo a measurement allows, at most half the receptive field; without it
    the halo is half the receptive field."""
    assert card(receptive_field=103).tile_halo == 52
    measured = ModelCard.from_metadata(card(receptive_field=103, halo=40).to_metadata())
    assert measured.halo == 40 and measured.tile_halo == 40 and "halo" not in measured.extra
    assert "halo" not in card(receptive_field=103).to_metadata()
    for bad, why in (("53", "more than half the receptive field"), ("0", ">= 1"), ("4.5", "integer")):
        meta = card(receptive_field=103).to_metadata()
        meta["halo"] = bad
        with pytest.raises(ModelCardError, match=why) as info:
            ModelCard.from_metadata(meta)
        assert info.value.key == "halo"
