"""Training configurations: YAML files in ``training/configs/`` read into one checked dictionary.

A configuration names the strategy, the architecture, the loss, the data and the optimisation
(every key is in :data:`DEFAULTS` below, with a comment; ``training/configs/`` holds the bundled
models' files). :func:`load_config` fills the defaults below,
applies ``key.sub=value`` overrides (``--set`` on the command line) and rejects unknown keys, so a
typo never silently trains something else.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Dict, Iterable, Mapping, Optional

import yaml

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
STRATEGIES = ("supervised", "pairs", "masking")
ARCHITECTURES = ("dncnn", "unet")
LOSSES = ("l2", "l1", "nll")

DEFAULTS: Dict[str, Any] = {
    "name": None,                    # model name (the card's name; file name = name with _ for -)
    "description": "",               # one line for the card
    "strategy": "supervised",
    "init": None,                    # fine-tuning: a checkpoint.pt or .onnx (int8: dequantised), same architecture
    # the init file is a wider U-Net whose architecture differs by these keys (e.g. {width: 32}):
    # its most useful channels are copied into the run's architecture (training/prune.py)
    "init_prune": None,
    # the init file is a narrower U-Net (e.g. {width: 32} for a width-48 run): copied into the run's
    # wider architecture so that it starts computing the same function (training/prune.py)
    "init_widen": None,
    # the init file is a U-Net with fewer residual blocks after the bottleneck (e.g.
    # {bottleneck_blocks: 0}): its weights are copied, the new blocks start as the identity
    "init_deepen": None,
    # knowledge distillation (supervised, loss l1/l2): {teacher: a .onnx (int8: dequantised) or
    # checkpoint.pt, architecture: the teacher's keys that differ from the run's (e.g. {width: 24}),
    # weight: w in (0, 1]}: the loss is (1 - w) x loss(prediction, clean) + w x loss(prediction,
    # teacher's prediction on the same noisy patch); the frozen teacher runs beside the network
    "distill": None,
    # quantisation-aware training (training/qat.py): {reduce_range: true|false (7-bit weights, for
    # CPUs without VNNI), momentum: the running activation ranges' (0.01), learn_ranges: true|false
    # (the ranges trained with the network instead, LSQ)}: the convolutions run through the int8
    # rounding onnxruntime will apply; the export stays float32, to be quantised with python -m
    # training quantize --float-input (and --reduce-range when set here; --ranges <run>/
    # qat_ranges.json to use the learned ranges)
    "qat": None,
    # Auto model choice (card keys auto_looks, auto_correlation, auto_priority, sensor_family and,
    # optional, auto_priority_no_vnni; see sar_despeckle_plugin/core/model_choice.py): e.g.
    # {looks: [0.3, 1.3], correlation: [0.15, 1.0], priority: 10, sensor_family: "..."} (and
    # priority_no_vnni: 16 for the priority on CPUs without VNNI); None: never chosen by Auto
    "auto": None,
    # the card key looks_scaling=true: with LOOKS given, speckle of other looks is scaled in the log
    # domain to the training level (sar_despeckle_plugin/core/normalisation.py looks_scale); for
    # fixed-looks multi-look networks, where it was measured to help
    "looks_scaling": False,
    # the card key halo: the tiling halo the pipeline gives this network, when measured below half
    # its receptive field (benchmarks/bench_halo.py); None: half the receptive field
    "halo": None,
    "architecture": {
        "type": "dncnn",
        # dncnn
        "depth": 17, "width": 64, "batch_norm": True, "residual": True, "dilation": 1,
        # unet
        "levels": 3, "convs_per_block": 2, "max_width": 256, "bottleneck_blocks": 0, "bottleneck_dilation": 1,
    },
    "loss": {"kind": "l2", "tv_weight": 0.0},
    "data": {
        "root": None,                # default: ../shared/data next to the repository
        "looks": 1.0,                # speckle looks of the model (the card's looks, used to debias)
        "looks_max": None,           # supervised/masking: noise-level-blind training in [looks, looks_max]
        "single_look_fraction": 0.5,
        "psf_sigma_max": 0.0,        # correlated speckle: PSF std drawn in [0, psf_sigma_max] pixels
        "correlated_fraction": 0.0,  # fraction of patches with correlated speckle
        "psf_sigma_min": 0.0,        # lower end of the PSF std range (correlated patches)
        "psf_anisotropic": False,    # draw the PSF std of rows and columns independently
        # SAR-like content (supervised/masking; see training/data.py): shares of the patches
        "contrast_fraction": 0.0,    # log-contrast expanded by a factor uniform in [1, contrast_max]
        "contrast_max": 1.0,
        "scatterer_fraction": 0.0,   # 1-6 deterministic one-pixel targets 15-35 dB above the median
        "line_fraction": 0.0,        # 1-3 one-pixel bright or dark lines
        "rescale_fraction": 0.0,     # cropped at a zoom log-uniform in [1/rescale_max, rescale_max]
        "rescale_max": 1.0,
        "ratio_fraction": 0.0,       # time-series ratio images (training/data.py ratio_field)
        "norm_scale": 2.0,
        "jitter": 0.5,
        "s1_weight": 0.4,            # supervised/masking: share of Sentinel-1 temporal-mean patches
        "holdout_bsd": 8,
        "holdout_s1": 4,
        "mask_fraction": 0.05,       # masking
        # supervised: a share of the loss from single-image masking on the real single-look data
        # (training.strategies.RealMaskSampler on load_real_single_look's "train" part)
        "real_share": 0.0,
        "real_mask_fraction": 0.008,  # block centres per pixel
        "real_mask_radius": 2,        # blind block (2 r + 1)^2 around each centre
        "real_holdout": 0.4,          # right part of each real image's columns, never trained on
        "change_window": 7,          # pairs: change compensation window and threshold (robust sigmas)
        "change_k": 3.0,
        "exclude_positions": [5, 6, 7, 8],  # pairs: stack positions not used (sand at the noise floor)
        "holdout_positions": [10, 11],      # pairs: stack positions kept for validation
    },
    "patch": 64,
    "batch": 32,
    "steps": 1000,
    "optimizer": {"lr": 1e-3, "warmup": 200, "min_lr_ratio": 0.01},
    "seed": 0,
    "bf16": True,
    "checkpoint_minutes": 5,         # checkpoint.pt also this often between validations (a lost machine)
    "workers": 1,
    "log_every": 50,
    "val_every": 500,
}


class ConfigError(ValueError):
    """A configuration file or override that cannot be used."""


def _merge(base: Dict[str, Any], new: Mapping[str, Any], path: str = "") -> None:
    for key, value in new.items():
        where = f"{path}{key}"
        if key not in base:
            raise ConfigError(f"unknown configuration key {where!r}")
        if isinstance(base[key], dict):
            if value is None and not path and DEFAULTS.get(key, {}) is None:
                base[key] = None  # an optional block switched off (e.g. --set distill=null)
                continue
            if not isinstance(value, Mapping):
                raise ConfigError(f"{where!r} must be a mapping")
            _merge(base[key], value, where + ".")
        else:
            base[key] = value


def _parse_override(item: str) -> Dict[str, Any]:
    if "=" not in item:
        raise ConfigError(f"override {item!r} is not key=value")
    key, raw = item.split("=", 1)
    value = yaml.safe_load(raw) if raw else None
    out: Dict[str, Any] = {}
    node = out
    parts = key.strip().split(".")
    for p in parts[:-1]:
        node = node.setdefault(p, {})
    node[parts[-1]] = value
    return out


def check(cfg: Dict[str, Any]) -> Dict[str, Any]:
    if cfg["strategy"] not in STRATEGIES:
        raise ConfigError(f"strategy must be one of {STRATEGIES}, got {cfg['strategy']!r}")
    if cfg["architecture"]["type"] not in ARCHITECTURES:
        raise ConfigError(f"architecture.type must be one of {ARCHITECTURES}, got {cfg['architecture']['type']!r}")
    if cfg["loss"]["kind"] not in LOSSES:
        raise ConfigError(f"loss.kind must be one of {LOSSES}, got {cfg['loss']['kind']!r}")
    if cfg["strategy"] == "supervised" and cfg["loss"]["kind"] == "nll":
        raise ConfigError("the speckle likelihood (loss nll) needs a noisy target: use it with pairs or masking")
    if not cfg.get("name"):
        raise ConfigError("a configuration needs a 'name' (the model card's name)")
    for key in ("patch", "batch", "steps"):
        if int(cfg[key]) < 1:
            raise ConfigError(f"{key} must be >= 1")
    if float(cfg["data"]["looks"]) <= 0:
        raise ConfigError("data.looks must be > 0")
    if sum(cfg.get(k) is not None for k in ("init_prune", "init_widen", "init_deepen")) > 1:
        raise ConfigError("init_prune, init_widen and init_deepen exclude each other")
    for key, verb in (("init_prune", "widen"), ("init_widen", "narrow")):
        source = cfg.get(key)
        if source is None:
            continue
        if not isinstance(source, Mapping) or not source:
            raise ConfigError(f"{key} must be a mapping of architecture keys (e.g. {{width: 32}})")
        if cfg["architecture"]["type"] != "unet" or not cfg.get("init"):
            raise ConfigError(f"{key} needs a unet architecture and an init file")
        bad = sorted(set(source) - {"width", "max_width"})
        if bad:
            raise ConfigError(f"{key} may only {verb} width and max_width, not {bad}")
    deepen = cfg.get("init_deepen")
    if deepen is not None:
        if not isinstance(deepen, Mapping) or set(deepen) != {"bottleneck_blocks"}:
            raise ConfigError("init_deepen must be {bottleneck_blocks: N}, the init file's number of blocks")
        if cfg["architecture"]["type"] != "unet" or not cfg.get("init"):
            raise ConfigError("init_deepen needs a unet architecture and an init file")
        if not 0 <= int(deepen["bottleneck_blocks"]) < int(cfg["architecture"].get("bottleneck_blocks") or 0):
            raise ConfigError("init_deepen.bottleneck_blocks must be below the run's architecture.bottleneck_blocks")
    distill = cfg.get("distill")
    if distill is not None:
        if not isinstance(distill, Mapping) or not distill.get("teacher") or "weight" not in distill:
            raise ConfigError("distill must be {teacher: FILE, weight: W} (and optionally architecture: {...})")
        bad = sorted(set(distill) - {"teacher", "weight", "architecture"})
        if bad:
            raise ConfigError(f"distill takes teacher, weight and architecture, not {bad}")
        if not 0.0 < float(distill["weight"]) <= 1.0:
            raise ConfigError(f"distill.weight must be in (0, 1], got {distill['weight']}")
        if cfg["strategy"] != "supervised" or cfg["loss"]["kind"] not in ("l1", "l2"):
            raise ConfigError("distill needs the supervised strategy and an l1 or l2 loss (the teacher's "
                              "prediction is a clean-image estimate)")
        if not isinstance(distill.get("architecture") or {}, Mapping):
            raise ConfigError("distill.architecture must be a mapping of architecture keys")
    qat = cfg.get("qat")
    if qat is not None:
        if not isinstance(qat, Mapping):
            raise ConfigError("qat must be a mapping {reduce_range: BOOL, momentum: M, learn_ranges: BOOL}")
        bad = sorted(set(qat) - {"reduce_range", "momentum", "learn_ranges"})
        if bad:
            raise ConfigError(f"qat takes reduce_range, momentum and learn_ranges, not {bad}")
        if not 0.0 < float(qat.get("momentum", 0.01)) <= 1.0:
            raise ConfigError(f"qat.momentum must be in (0, 1], got {qat.get('momentum')}")
        if cfg["architecture"]["type"] != "unet" or cfg["architecture"]["batch_norm"]:
            raise ConfigError("qat needs a unet architecture without batch_norm (the layout training.quantize "
                              "quantises; folded batch normalisation would change the weights it rounds)")
    return cfg


def load_config(path: Optional[Path | str] = None, overrides: Iterable[str] = (),
                values: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
    """Defaults, then the YAML file ``path`` (a path, or a name in training/configs), then
    ``values``, then ``key.sub=value`` ``overrides``."""
    cfg = copy.deepcopy(DEFAULTS)
    if path is not None:
        p = Path(path)
        if not p.exists() and (CONFIG_DIR / f"{path}.yaml").exists():
            p = CONFIG_DIR / f"{path}.yaml"
        if not p.exists():
            raise ConfigError(f"configuration file {path} not found")
        loaded = yaml.safe_load(p.read_text()) or {}
        if not isinstance(loaded, Mapping):
            raise ConfigError(f"{p} must hold a mapping")
        _merge(cfg, loaded)
        cfg["_file"] = str(p)
    if values:
        _merge(cfg, values)
    for item in overrides:
        _merge(cfg, _parse_override(item))
    return check(cfg)


def config_path_for_command(cfg: Mapping[str, Any]) -> str:
    """The configuration file as written in reproduce commands (relative to the repository)."""
    f = cfg.get("_file")
    if not f:
        return "CONFIG.yaml"
    p = Path(f).resolve()
    try:
        return str(p.relative_to(CONFIG_DIR.parent.parent))
    except ValueError:
        return str(p)
