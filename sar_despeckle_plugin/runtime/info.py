"""What this installation can run: library versions, onnxruntime providers, whether CUDA really
runs, and the bundled models with their SHA-256 and card summary. Never imports QGIS.

``get_available_providers()`` lists CUDA wherever onnxruntime-gpu is installed, GPU or not; only
a session that was created and has run tells whether CUDA works (:func:`cuda_check`).
"""
from __future__ import annotations

import functools
import os
import platform
import time
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np

from ..core.errors import DespeckleError
from ..core.model_choice import is_int8
from .models import DESPECKLERS, GAUSSIAN, RATIO, SUPER, bundled_cards, bundled_models, fp16_twin
from .onnx_denoiser import CPU, CUDA, INSTALL_HINT, file_sha256, fp16_note, nvidia_driver_present, read_card


def simd_level(flags) -> str:
    """The x86 vector extensions that set onnxruntime's CPU speed, from /proc/cpuinfo ``flags``:
    int8 convolutions are fastest with VNNI (AVX-512 VNNI or AVX-VNNI), and without AVX-512 the
    float32 ones are slower too; "" when the flags say nothing (not x86, or an unknown CPU elsewhere)."""
    flags = set(flags)
    if "avx512_vnni" in flags:
        return "AVX-512 VNNI"
    if "avx_vnni" in flags:
        return "AVX-VNNI (AVX2)"
    if "avx512f" in flags:
        return "AVX-512 (no VNNI)"
    if "avx2" in flags:
        return "AVX2 (no VNNI)"
    if "sse4_2" in flags or "avx" in flags:
        return "SSE4 / AVX"
    return ""


# numpy's runtime CPU features -> the /proc/cpuinfo flags simd_level reads
NUMPY_FLAGS = {"AVX512VNNI": "avx512_vnni", "AVX512F": "avx512f", "AVX2": "avx2", "AVX": "avx", "SSE42": "sse4_2"}
# Intel family 6 models with AVX2 and no VNNI of either kind (Haswell to Comet Lake, Skylake-SP and
# Cannon Lake; Cascade Lake shares Skylake-SP's 85 and has AVX-512 VNNI, which numpy sees) ...
INTEL_PRE_VNNI = frozenset({60, 63, 69, 70, 61, 71, 79, 86, 78, 94, 85, 142, 158, 165, 166, 102})
# ... and those with AVX-VNNI (Alder Lake and later hybrids, Alder Lake-N), which numpy does not
# detect: seen as AVX2 alone they would take the float32 models, slower there than int8
INTEL_AVX_VNNI = frozenset({151, 154, 183, 186, 191, 170, 172, 189, 190, 197, 198})


def _numpy_cpu_features() -> Dict[str, bool]:
    for mod in ("numpy._core._multiarray_umath", "numpy.core._multiarray_umath"):
        try:
            return dict(__import__(mod, fromlist=["__cpu_features__"]).__cpu_features__)
        except (ImportError, AttributeError):
            continue
    return {}


def flags_without_procfs(features: Dict[str, bool], system: str, machine: str, processor: str) -> frozenset:
    """/proc/cpuinfo-style flags where there is no /proc/cpuinfo (Windows, macOS), from numpy's
    runtime CPU ``features``, only where they settle VNNI: AVX-512 VNNI is seen directly; its absence
    means no VNNI on AMD (every AMD CPU with VNNI has AVX-512 VNNI), on Intel Macs, and on the Intel
    models listed (``processor`` as Windows gives it: "Intel64 Family 6 Model 158 Stepping 10,
    GenuineIntel"). Elsewhere (an unlisted Intel model, which may have AVX-VNNI; ARM) nothing, so
    that Auto keeps its usual choice."""
    flags = frozenset(NUMPY_FLAGS[k] for k, on in features.items() if on and k in NUMPY_FLAGS)
    if "avx512_vnni" in flags or not flags:
        return flags
    words = processor.replace(",", " ").split()
    model = words[words.index("Model") + 1] if "Model" in words[:-1] else ""
    family = words[words.index("Family") + 1] if "Family" in words[:-1] else ""
    if "AuthenticAMD" in words or (system == "Darwin" and machine == "x86_64"):
        return flags
    if "GenuineIntel" in words and family == "6" and model.isdigit():
        if int(model) in INTEL_AVX_VNNI:
            return flags | {"avx_vnni"}
        if int(model) in INTEL_PRE_VNNI:
            return flags
    return frozenset()


@functools.lru_cache(maxsize=1)
def _cpu() -> Tuple[str, frozenset]:
    """(model name, flags): /proc/cpuinfo's on Linux, elsewhere :func:`flags_without_procfs`."""
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            flags = frozenset()
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and value.strip():
                    name = value.strip()
                elif key.strip() == "flags":
                    flags = frozenset(value.split())
                    break
        return name, flags
    except OSError:
        return name, flags_without_procfs(_numpy_cpu_features(), platform.system(), platform.machine(),
                                          platform.processor())


def lacks_vnni(level: str) -> bool:
    """True for a known x86 SIMD level (:func:`simd_level`) without VNNI; False for one with VNNI
    and where the level is unknown (other systems and architectures keep Auto's usual choice)."""
    return bool(level) and "VNNI" not in level.replace("no VNNI", "")


# "1": treat the CPU as one with VNNI, "0": as one without; unset or anything else: detect. Pins
# Auto's CPU choice, e.g. on a cluster of mixed CPUs, or where the CPU cannot be read
VNNI_ENV = "SAR_DESPECKLE_VNNI"


def cpu_lacks_vnni() -> bool:
    """This CPU's int8 convolutions run without VNNI (from /proc/cpuinfo on Linux, numpy's CPU
    features elsewhere, :func:`_cpu`; :data:`VNNI_ENV` overrides): Auto then uses the cards' ``auto_priority_no_vnni``
    (:mod:`core.model_choice`)."""
    forced = os.environ.get(VNNI_ENV, "").strip()
    if forced in ("0", "1"):
        return forced == "0"
    return lacks_vnni(simd_level(_cpu()[1]))


def no_vnni_models() -> list:
    """The bundled despecklers that rank themselves higher on a CPU without VNNI (card key
    ``auto_priority_no_vnni``: float32 networks faster there than the int8 ones Auto takes elsewhere)."""
    return [m for m, card in zip(bundled_models(), bundled_cards())
            if card is not None and "auto_priority_no_vnni" in card.extra]


def cpu_description(advice: bool = True) -> str:
    """The CPU as it bears on the networks' speed: model name, logical CPUs, SIMD level and, without
    VNNI and with ``advice``, that the int8 models gain less over float32 (measured on an AVX2-only
    AMD EPYC: 1.4 x, against about 2 x with AVX-512 VNNI) and which model Auto takes there."""
    name, flags = _cpu()
    simd = simd_level(flags)
    text = f"{name}, {os.cpu_count() or '?'} logical CPUs"
    if simd:
        text += f", {simd}"
        if advice and lacks_vnni(simd):
            text += ": the int8 models gain less over float32 than on a CPU with VNNI"
            fast = no_vnni_models()
            if fast and cpu_lacks_vnni():
                text += ("; for single-look speckle Auto takes the float32 "
                         + " and ".join(f"MODEL {m.index} ({m.name})" for m in fast)
                         + " here, faster than the int8 models it takes on CPUs with VNNI")
            elif fast:
                text += f" ({VNNI_ENV}=1: Auto takes the models it takes on CPUs with VNNI)"
    return text


@dataclass
class ModelInfo:
    kind: str                  # "despeckler" (MODEL of despeckle), "gaussian" (MODEL of despecklepolsar)
    #                            "ratio" or "super" (the time series' ratio and super-image networks)
    index: int                 # position in that MODEL enum
    name: str
    file: str
    size_bytes: int
    sha256: str
    summary: str = ""          # one line from the card
    card: Dict[str, object] = field(default_factory=dict)
    error: str = ""            # the file is missing or its card does not parse
    fp16_file: str = ""        # its float16 twin, which CUDA runs on cards with tensor cores
    fp16_sha256: str = ""


@dataclass
class RuntimeInfo:
    plugin_version: str
    python: str
    numpy: str
    gdal: str
    onnxruntime: str            # "" when not installed
    onnxruntime_error: str      # why it cannot be imported, with the install hint
    available_providers: List[str]
    cuda_works: bool
    cuda_detail: str
    models: List[ModelInfo]
    cpu: str = ""               # cpu_description()

    def as_dict(self) -> Dict[str, object]:
        return asdict(self)

    def lines(self) -> List[str]:
        out = [f"sar-despeckle {self.plugin_version}; Python {self.python}, numpy {self.numpy}, GDAL {self.gdal}",
               (f"onnxruntime {self.onnxruntime}, providers: {', '.join(self.available_providers)}"
                if self.onnxruntime else f"onnxruntime: {self.onnxruntime_error}"),
               f"CUDA: {'works' if self.cuda_works else 'not usable'} ({self.cuda_detail})"]
        if self.cpu:
            out.insert(1, f"CPU: {self.cpu}")
        for m in self.models:
            kind = "MODEL" if m.kind == "despeckler" else "MuLog MODEL"
            out.append(f"{kind} {m.index} {m.name}: {m.error}" if m.error else
                       f"{kind} {m.index} {m.name} ({m.file}, {m.size_bytes / 1e6:.1f} MB, "
                       f"sha256 {m.sha256}): {m.summary}"
                       + (f"; on CUDA with tensor cores its float16 twin {m.fp16_file}, sha256 {m.fp16_sha256}"
                          if m.fp16_file else ""))
        return out


def _summary(card) -> str:
    if card.input_domain == "gaussian":
        what = f"Gaussian denoiser, sigma {card.sigma_min:g}-{card.sigma_max:g}"
    else:
        looks = f"{card.looks:g}" if card.looks_max in (None, card.looks) else f"{card.looks:g}-{card.looks_max:g}"
        what = f"{looks}-look despeckler"
    auto = card.extra.get("auto_looks")
    if auto:
        what += (f", Auto for {auto.replace(',', '-')} looks and lag-1 correlation "
                 f"{card.extra.get('auto_correlation', '?').replace(',', '-')}")
    arch = card.architecture.split(";")[0] + (" int8" if is_int8(card) else "")
    halo = f" (halo {card.halo}, measured)" if card.halo is not None else ""
    return (f"{arch}, {what}, receptive field {card.receptive_field}{halo}, tile {card.tile_size}, "
            f"{card.training_strategy.split(':')[0]} training")


def _card_dict(card) -> Dict[str, object]:
    keys = ("name", "architecture", "input_domain", "looks", "looks_max", "sigma_min", "sigma_max", "debias",
            "norm_offset", "norm_scale", "receptive_field", "halo", "tile_size", "size_multiple", "training_strategy",
            "training_data", "metrics", "description", "license")
    out = {k: getattr(card, k) for k in keys}
    out.update({k: v for k, v in card.extra.items()})
    return out


def model_infos() -> List[ModelInfo]:
    """Every bundled file (both MODEL enums, the time series' ratio and super-image networks), with
    its SHA-256 and card (no inference session beyond reading the metadata)."""
    out = []
    for kind, label in ((DESPECKLERS, "despeckler"), (GAUSSIAN, "gaussian"), (RATIO, "ratio"), (SUPER, "super")):
        for m in bundled_models(kind):
            info = ModelInfo(label, m.index, m.name, m.file, 0, "")
            try:
                info.size_bytes = os.path.getsize(m.path)
                info.sha256 = file_sha256(m.path)
                card = read_card(m.path)
                info.summary, info.card = _summary(card), _card_dict(card)
                twin = fp16_twin(m.path, kind)
                if twin:
                    info.fp16_file, info.fp16_sha256 = os.path.basename(twin), file_sha256(twin)
            except (OSError, DespeckleError) as err:
                info.error = str(err)
            out.append(info)
    return out


def cuda_check(ort, model_path: Optional[str]) -> tuple:
    """(works, detail): a session on [CUDA, CPU] with ``model_path`` that runs one 32 x 32 tile
    and keeps CUDA as its first provider."""
    if CUDA not in ort.get_available_providers():
        return False, "this onnxruntime has no CUDA provider (install onnxruntime-gpu for NVIDIA GPUs)"
    if not model_path:
        return False, "no bundled model to test a session with"
    opts = ort.SessionOptions()
    opts.log_severity_level = 4
    # a CUDA provider that cannot start logs errors through the default logger: the check reports them
    ort.set_default_logger_severity(4)
    try:
        sess = ort.InferenceSession(model_path, sess_options=opts, providers=[CUDA, CPU])
        if sess.get_providers()[0] != CUDA:
            why = ("the CUDA runtime libraries that this onnxruntime needs were not found" if nvidia_driver_present()
                   else "no NVIDIA driver (libcuda) was found, so CUDA cannot run")
            return False, (f"onnxruntime-gpu is installed but {why} (the session fell back to CPU; DEVICE Auto "
                           "uses the CPU)")
        x = sess.get_inputs()[0]
        shape = [1, int(x.shape[1]) if isinstance(x.shape[1], int) else 1, 32, 32]
        t = time.perf_counter()
        sess.run(None, {x.name: np.zeros(shape, dtype=np.float32)})
        ms = 1000 * (time.perf_counter() - t)
        return True, f"a 32 x 32 tile ran on CUDA in {ms:.0f} ms; {fp16_note()}"
    except Exception as err:  # onnxruntime's own error types
        return False, f"CUDA session failed: {err}"
    finally:
        ort.set_default_logger_severity(2)  # onnxruntime's default: warnings


def runtime_info(check_cuda: bool = True) -> RuntimeInfo:
    from osgeo import gdal

    from .pipeline import VERSION
    try:
        import onnxruntime as ort
        ort_version, ort_error, providers = ort.__version__, "", list(ort.get_available_providers())
    except ImportError as err:
        ort, ort_version, ort_error, providers = None, "", f"not installed ({err}): {INSTALL_HINT}", []
    models = model_infos()
    if ort is None:
        cuda, detail = False, "onnxruntime is not installed"
    elif check_cuda:
        smallest = min((m for m in models if not m.error and m.kind == "despeckler"),
                       key=lambda m: m.size_bytes, default=None)
        path = None
        if smallest is not None:
            path = next(b.path for b in bundled_models(DESPECKLERS) if b.name == smallest.name)
        cuda, detail = cuda_check(ort, path)
    else:
        cuda, detail = False, "not checked"
    return RuntimeInfo(VERSION, platform.python_version(), np.__version__, gdal.__version__, ort_version, ort_error,
                       providers, cuda, detail, models, cpu_description())
