"""The model card: the contract an ONNX network carries in its ``metadata_props``.

Every value is a string in ONNX; :class:`ModelCard` parses them once and checks them. Two kinds
of network exist, told apart by ``input_domain``:

* ``log_intensity`` despecklers: input (N, 1, H, W) normalised log-intensity, output the same
  shape, normalised log-reflectivity;
* ``gaussian`` denoisers (used inside MuLog): input (N, 2, H, W) = [noisy image, constant map of
  the noise standard deviation], both divided by ``norm_scale`` after subtracting
  ``norm_offset`` from the image; output (N, 1, H, W), the denoised image in the same units.

Keys ("yes" = required for both kinds, "log" = required for despecklers, "gauss" = required for
Gaussian denoisers):

=================== ======== ==============================================================
key                 required meaning
=================== ======== ==============================================================
name                yes      short unique name, shown in the MODEL list
architecture        yes      e.g. ``DnCNN(depth=17, width=64, residual)``
input_domain        yes      ``log_intensity`` or ``gaussian`` (see above)
looks               log      number of looks of the speckle it was trained on (float > 0)
debias              log      ``true``: the pipeline subtracts digamma(L) - log(L) from log I
                             before normalising (the network sees an unbiased log); ``false``:
                             the network sees log I as is
norm_offset         yes      ``median`` (the median of the input's log values, measured once
                             per raster so that every tile uses the same value) or a number
sigma_max           gauss    largest noise standard deviation it was trained for, in the data's
                             units (before the division by norm_scale)
sigma_min           no       smallest one (default 0)
norm_scale          yes      divisor applied after the offset (float > 0)
receptive_field     yes      receptive field in pixels (int >= 1); the tiling halo is half of it
                             unless ``halo`` says less
training_strategy   yes      supervised / pairs / masking, and the loss
training_data       yes      which data, which speckle simulation
metrics             yes      JSON object of validation figures (e.g. PSNR against a boxcar)
reproduce           yes      the command that rebuilds this file from the repository
looks_max           no       highest number of looks in the training speckle, for models trained
                             over a range of speckle levels (float >= looks; default: looks)
tile_size           no       default tile size (int, default 512)
size_multiple       no       tile sizes must be multiples of it (int, default 1; U-Net: 2**depth)
halo                no       the tiling halo, measured (``benchmarks/bench_halo.py``): how far
                             the output still depends on the input to within a small fraction
                             of a per cent, for a network whose outer receptive field barely
                             counts (int, 1 to half the receptive field; default: half of it,
                             every tiling giving the same result to rounding)
description         no       one paragraph for the help
license             no       licence of the weights
=================== ======== ==============================================================

Any other key is kept in ``extra``: the Auto-choice keys (``core.model_choice``), and
``looks_scaling`` (``true``: a network that takes speckle of a *given* LOOKS outside its
training range, ``looks`` to ``looks_max``, by scaling its log input to the nearest end of it,
``core.normalisation.looks_scale``).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Dict, Mapping, Optional, Union

from .errors import ModelCardError
from .tiling import halo_for

INPUT_DOMAIN_LOG_INTENSITY = "log_intensity"
INPUT_DOMAIN_GAUSSIAN = "gaussian"
COMMON_KEYS = ("name", "architecture", "input_domain", "norm_offset", "norm_scale", "receptive_field",
               "training_strategy", "training_data", "metrics", "reproduce")
DOMAIN_KEYS = {INPUT_DOMAIN_LOG_INTENSITY: ("looks", "debias"), INPUT_DOMAIN_GAUSSIAN: ("sigma_max",)}
REQUIRED_KEYS = COMMON_KEYS + DOMAIN_KEYS[INPUT_DOMAIN_LOG_INTENSITY]  # of a despeckler
OPTIONAL_KEYS = ("looks_max", "tile_size", "size_multiple", "description", "license", "sigma_min", "sigma_max",
                 "halo")


def _float(meta: Mapping[str, str], key: str, positive: bool = True) -> float:
    try:
        value = float(meta[key])
    except (TypeError, ValueError):
        raise ModelCardError(key, f"expected a number, got {meta[key]!r}") from None
    if not math.isfinite(value) or (positive and value <= 0):
        raise ModelCardError(key, f"expected a finite {'positive ' if positive else ''}number, got {value}")
    return value


def _int(meta: Mapping[str, str], key: str, default: Optional[int] = None) -> int:
    if key not in meta:
        return default
    try:
        value = int(str(meta[key]).strip())
    except ValueError:
        raise ModelCardError(key, f"expected an integer, got {meta[key]!r}") from None
    if value < 1:
        raise ModelCardError(key, f"expected an integer >= 1, got {value}")
    return value


@dataclass(frozen=True)
class ModelCard:
    name: str
    architecture: str
    input_domain: str
    looks: float
    debias: bool
    norm_offset: Union[str, float]
    norm_scale: float
    receptive_field: int
    training_strategy: str
    training_data: str
    metrics: Dict[str, object]
    reproduce: str
    tile_size: int = 512
    size_multiple: int = 1
    looks_max: Optional[float] = None
    sigma_min: float = 0.0
    sigma_max: Optional[float] = None
    description: str = ""
    license: str = ""
    extra: Dict[str, str] = field(default_factory=dict)
    halo: Optional[int] = None

    @classmethod
    def from_metadata(cls, meta: Mapping[str, str]) -> "ModelCard":
        """Parse ONNX ``metadata_props``; a missing or bad key raises :class:`ModelCardError`."""
        def missing(key):
            return key not in meta or str(meta[key]).strip() == ""

        for key in COMMON_KEYS:
            if missing(key):
                raise ModelCardError(key, "missing from the model's metadata; this ONNX file has no "
                                          "valid sar-despeckle model card")
        domain = str(meta["input_domain"]).strip()
        if domain not in DOMAIN_KEYS:
            raise ModelCardError("input_domain", f"expected one of {', '.join(sorted(DOMAIN_KEYS))}, "
                                                 f"got {meta['input_domain']!r}")
        for key in DOMAIN_KEYS[domain]:
            if missing(key):
                raise ModelCardError(key, f"missing from the model's metadata (required for '{domain}' networks)")
        gaussian = domain == INPUT_DOMAIN_GAUSSIAN
        debias = str(meta.get("debias", "false")).strip().lower()
        if debias not in ("true", "false"):
            raise ModelCardError("debias", f"expected 'true' or 'false', got {meta['debias']!r}")
        offset: Union[str, float] = str(meta["norm_offset"]).strip()
        if offset != "median":
            offset = _float(meta, "norm_offset", positive=False)
        try:
            metrics = json.loads(meta["metrics"])
        except json.JSONDecodeError as err:
            raise ModelCardError("metrics", f"not valid JSON ({err})") from None
        if not isinstance(metrics, dict):
            raise ModelCardError("metrics", "expected a JSON object")
        tile_size = _int(meta, "tile_size", 512)
        size_multiple = _int(meta, "size_multiple", 1)
        if tile_size % size_multiple:
            raise ModelCardError("tile_size", f"{tile_size} is not a multiple of size_multiple={size_multiple}")
        looks = _float(meta, "looks") if not missing("looks") else 1.0
        looks_max = _float(meta, "looks_max") if not missing("looks_max") else None
        sigma_max = _float(meta, "sigma_max") if gaussian else None
        sigma_min = _float(meta, "sigma_min", positive=False) if not missing("sigma_min") else 0.0
        if sigma_max is not None and not 0 <= sigma_min < sigma_max:
            raise ModelCardError("sigma_min", f"expected 0 <= sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
        if looks_max is not None and looks_max < looks:
            raise ModelCardError("looks_max", f"{looks_max} is below looks={looks}")
        receptive_field = _int(meta, "receptive_field")
        halo = _int(meta, "halo") if not missing("halo") else None
        if halo is not None and halo > halo_for(receptive_field):
            raise ModelCardError("halo", f"{halo} is more than half the receptive field ({receptive_field}): "
                                         f"at most {halo_for(receptive_field)}")
        known = set(REQUIRED_KEYS) | set(OPTIONAL_KEYS)
        return cls(
            name=str(meta["name"]).strip(),
            architecture=str(meta["architecture"]),
            input_domain=domain,
            looks=looks,
            debias=debias == "true",
            norm_offset=offset,
            norm_scale=_float(meta, "norm_scale"),
            receptive_field=receptive_field,
            training_strategy=str(meta["training_strategy"]),
            training_data=str(meta["training_data"]),
            metrics=metrics,
            reproduce=str(meta["reproduce"]),
            tile_size=tile_size,
            size_multiple=size_multiple,
            looks_max=looks_max,
            sigma_min=sigma_min,
            sigma_max=sigma_max,
            description=str(meta.get("description", "")),
            license=str(meta.get("license", "")),
            extra={k: str(v) for k, v in meta.items() if k not in known},
            halo=halo,
        )

    def to_metadata(self) -> Dict[str, str]:
        """The ``metadata_props`` mapping (all strings) that :meth:`from_metadata` reads back."""
        meta = {
            "name": self.name,
            "architecture": self.architecture,
            "input_domain": self.input_domain,
            "looks": repr(float(self.looks)),
            "debias": "true" if self.debias else "false",
            "norm_offset": self.norm_offset if isinstance(self.norm_offset, str) else repr(float(self.norm_offset)),
            "norm_scale": repr(float(self.norm_scale)),
            "receptive_field": str(int(self.receptive_field)),
            "training_strategy": self.training_strategy,
            "training_data": self.training_data,
            "metrics": json.dumps(self.metrics, sort_keys=True),
            "reproduce": self.reproduce,
            "tile_size": str(int(self.tile_size)),
            "size_multiple": str(int(self.size_multiple)),
            "looks_max": "" if self.looks_max is None else repr(float(self.looks_max)),
            "description": self.description,
            "license": self.license,
        }
        if self.halo is not None:
            meta["halo"] = str(int(self.halo))
        if self.sigma_max is not None:
            meta["sigma_min"] = repr(float(self.sigma_min))
            meta["sigma_max"] = repr(float(self.sigma_max))
        meta.update(self.extra)
        return {k: v for k, v in meta.items() if not (k == "looks_max" and v == "")}

    @property
    def tile_halo(self) -> int:
        """The halo every tile gets: the card's measured ``halo``, else half the receptive field."""
        return int(self.halo) if self.halo is not None else halo_for(self.receptive_field)

    @property
    def is_gaussian(self) -> bool:
        return self.input_domain == INPUT_DOMAIN_GAUSSIAN

    @property
    def looks_range(self) -> tuple:
        """(lowest, highest) number of looks of the training speckle."""
        return self.looks, self.looks if self.looks_max is None else self.looks_max
