"""onnxruntime sessions for log-domain despeckling networks. Never imports QGIS.

onnxruntime is imported lazily so that the plugin loads (and says what is missing) in a QGIS
whose Python lacks it.
"""
from __future__ import annotations

import enum
import hashlib
import io
import os
import sys
from functools import lru_cache
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..core.errors import DeviceUnavailableError, ModelError, RuntimeDependencyError
from ..core.model_card import ModelCard

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
# set once an Auto session found that CUDA does not run here (onnxruntime-gpu without a usable GPU):
# later Auto sessions of this process go to the CPU at once
_CUDA_FELL_BACK = False
# Tiles per run of a despeckler on CUDA (:meth:`_OnnxNetwork.many`): one kernel launch per layer
# for several tiles, the input copied through IO binding. Not measured on a GPU yet
# (benchmarks/bench_cuda.py measures batches of 1 / 8 / 16); a batch the card has no memory for
# is split in halves (and later batches stay at the size that ran). On the CPU onnxruntime already
# spreads one tile over every core, and larger batches only took more memory: one tile per run.
CUDA_BATCH = 8
# IO-bound input buffers kept per network (one per tile shape seen; a grid has at most four)
BOUND_SHAPES = 4


def nvidia_driver_present() -> bool:
    """Whether the NVIDIA driver's CUDA library loads in this process (libcuda / nvcuda.dll): without
    it no GPU can run, and Auto does not ask onnxruntime-gpu for CUDA at all. Asking anyway makes
    onnxruntime print a red 'Failed to load library libonnxruntime_providers_cuda.so' to the
    terminal and the QGIS log on every CPU-only machine, which reads like a failure."""
    return _cuda_driver() is not None


def _cuda_driver():
    """The NVIDIA driver's CUDA library (a ctypes handle), loaded once; None where it does not load."""
    global _DRIVER
    if _DRIVER is None:
        import ctypes
        names = ("nvcuda.dll",) if sys.platform == "win32" else ("libcuda.so.1", "libcuda.so", "libcuda.dylib")
        _DRIVER = False
        for name in names:
            try:
                _DRIVER = ctypes.CDLL(name)
                break
            except OSError:
                continue
    return _DRIVER or None


_DRIVER = None  # the handle, False where no driver loads, None until asked
# "0": CUDA runs the float32 files even where the card has tensor cores; "1": the float16 twins
# whatever the card (for a card the driver misreports; a test on the CPU)
FP16_ENV = "SAR_DESPECKLE_FP16"
FP16_MIN_CAPABILITY = (7, 0)  # tensor cores (Volta on); Pascal consumer cards run float16 at 1/64 rate


def gpu_compute_capability(device_id: int = 0) -> Optional[Tuple[int, int]]:
    """(major, minor) compute capability of CUDA device ``device_id`` (after CUDA_VISIBLE_DEVICES,
    as onnxruntime numbers them), asked of the NVIDIA driver (libcuda / nvcuda.dll) without any
    CUDA toolkit; None where no driver or device answers."""
    cuda = _cuda_driver()
    if cuda is None:
        return None
    import ctypes
    dev, major, minor = ctypes.c_int(), ctypes.c_int(), ctypes.c_int()
    # CUDA_SUCCESS = 0; CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR / _MINOR = 75 / 76
    if (cuda.cuInit(0) or cuda.cuDeviceGet(ctypes.byref(dev), int(device_id))
            or cuda.cuDeviceGetAttribute(ctypes.byref(major), 75, dev)
            or cuda.cuDeviceGetAttribute(ctypes.byref(minor), 76, dev)):
        return None
    return major.value, minor.value


def fp16_decision() -> Tuple[bool, str]:
    """(whether a CUDA session runs float16 twins here, why): FP16_ENV when it says 0 or 1, else
    whether the GPU's compute capability is at least FP16_MIN_CAPABILITY."""
    forced = os.environ.get(FP16_ENV, "").strip()
    if forced in ("0", "1"):
        return forced == "1", f"{FP16_ENV}={forced}"
    capability = gpu_compute_capability()
    if capability is None:
        return False, "compute capability unknown"
    return capability >= FP16_MIN_CAPABILITY, f"compute capability {capability[0]}.{capability[1]}"


def fp16_capable() -> bool:
    return fp16_decision()[0]


def fp16_note() -> str:
    """What :func:`fp16_decision` decides here and why, for the runtime information."""
    runs, why = fp16_decision()
    return f"{'float16 twins of the float32 models run' if runs else 'float32 files run'} ({why})"


INSTALL_HINT = ("install it into the Python that QGIS uses, e.g. on Debian/Ubuntu "
                "'pip install --user onnxruntime' (CPU) or 'pip install --user onnxruntime-gpu' (CUDA) "
                "with /usr/bin/python3, on Windows from the OSGeo4W Shell 'python -m pip install onnxruntime'")


class Device(enum.IntEnum):
    """Public ``DEVICE`` enum of the algorithms: the order is part of the interface."""

    AUTO = 0
    CPU = 1
    CUDA = 2


DEVICE_LABELS = {Device.AUTO: "Auto (CUDA when available)", Device.CPU: "CPU", Device.CUDA: "CUDA (NVIDIA GPU)"}


def import_onnxruntime():
    try:
        import onnxruntime
    except ImportError as err:
        raise RuntimeDependencyError(f"onnxruntime is not installed: {INSTALL_HINT}") from err
    return onnxruntime


@lru_cache(maxsize=32)
def _sha256(path: str, mtime: float, size: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def file_sha256(path: str) -> str:
    st = os.stat(path)
    return _sha256(os.path.abspath(path), st.st_mtime, st.st_size)


def read_card(path: str) -> ModelCard:
    """The model card of an ONNX file, read from its metadata without creating an inference
    session (a session costs 0.05-0.15 s per file, and Auto reads every bundled card); a file
    whose metadata cannot be parsed goes through onnxruntime, whose error says why."""
    _check_file(path)
    meta = model_metadata(path)
    if meta is not None:
        return ModelCard.from_metadata(meta)
    ort = import_onnxruntime()
    try:
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        sess = ort.InferenceSession(str(path), sess_options=opts, providers=[CPU])
    except Exception as err:  # onnxruntime raises its own Fail/InvalidGraph types
        raise _load_error(str(path), err, ort) from None
    return ModelCard.from_metadata(sess.get_modelmeta().custom_metadata_map)


def _fields(message, keep=None):
    """(field number, wire type, value) of one protobuf message, read from ``bytes`` or a binary
    file (just enough for ModelProto). A length-delimited field whose number is not in ``keep``
    (when given) is skipped without being read (value None): a model's graph is most of its file.
    Raises ValueError on a truncated or malformed message."""
    fh = io.BytesIO(message) if isinstance(message, (bytes, bytearray)) else message
    start = fh.tell()
    size = fh.seek(0, os.SEEK_END) - start
    fh.seek(start)

    def read(n):
        data = fh.read(n)
        if len(data) != n:
            raise ValueError("truncated protobuf message")
        return data

    def varint():
        value = shift = 0
        while True:
            byte = read(1)[0]
            value |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                return value

    while fh.tell() - start < size:
        key = varint()
        number, wire = key >> 3, key & 7
        if wire == 0:
            value = varint()
        elif wire == 2:
            n = varint()
            if keep is None or number in keep:
                value = read(n)
            elif fh.tell() - start + n > size:
                raise ValueError("truncated protobuf message")
            else:
                fh.seek(n, os.SEEK_CUR)
                value = None
        elif wire in (1, 5):
            value = read(8 if wire == 1 else 4)
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        yield number, wire, value


def model_metadata(path: str) -> Optional[Dict[str, str]]:
    """The ``metadata_props`` of an ONNX file as a dict, read without onnx or onnxruntime (the
    graph is skipped, not read); None when the file is not a parsable ModelProto."""
    try:
        out: Dict[str, str] = {}
        seen_graph = False
        with open(path, "rb") as fh:
            for number, wire, value in _fields(fh, keep={14}):
                seen_graph |= number == 7 and wire == 2  # ModelProto.graph
                if number == 14 and wire == 2:  # ModelProto.metadata_props: StringStringEntryProto
                    entry = {f: v for f, w, v in _fields(value) if w == 2}
                    out[entry.get(1, b"").decode("utf-8")] = entry.get(2, b"").decode("utf-8")
        return out if seen_graph else None
    except (OSError, ValueError, IndexError, UnicodeDecodeError):
        return None


def model_opsets(path: str) -> dict:
    """The opset imports of an ONNX file, {domain ('' = ONNX): version}, read without the onnx
    package; {} when the file cannot be parsed."""
    try:
        out = {}
        with open(path, "rb") as fh:
            for number, wire, value in _fields(fh, keep={8}):
                if number == 8 and wire == 2:  # ModelProto.opset_import
                    entry = {n: v for n, w, v in _fields(value)}
                    out[entry.get(1, b"").decode("utf-8", "replace")] = int(entry.get(2, 0))
        return out
    except (OSError, ValueError, IndexError):
        return {}


def _load_error(path: str, err: Exception, ort) -> ModelError:
    text = str(err)
    if "opset" in text.lower():
        opset = model_opsets(path).get("")
        return ModelError(f"onnxruntime {ort.__version__} cannot load ONNX model '{path}': it uses ONNX opset "
                          f"{opset if opset is not None else '?'}, newer than this onnxruntime supports; update "
                          f"onnxruntime ({INSTALL_HINT})")
    return ModelError(f"onnxruntime {ort.__version__} cannot load ONNX model '{path}': {text}")


def _check_file(path: str) -> None:
    if not path or not os.path.isfile(path):
        raise ModelError(f"model file not found: '{path}'")


class _OnnxNetwork:
    """An onnxruntime session on the requested device, with its parsed model card."""

    input_channels = 1
    kind = "log_intensity"
    kind_label = "a despeckling network"
    # onnxruntime's threads spin on the cores for a while after each run (its default)
    spin = True

    def __init__(self, path: str, device: Device | int = Device.AUTO, threads: int = 0, batch: int = 0,
                 fp16: Optional[bool] = None):
        ort = import_onnxruntime()
        self.path = str(path)
        _check_file(self.path)
        device = Device(int(device))
        available = ort.get_available_providers()
        if device == Device.CUDA and CUDA not in available:
            raise DeviceUnavailableError(
                "CUDA was requested but this onnxruntime has no CUDA support "
                f"(providers: {', '.join(available)}); install onnxruntime-gpu or choose CPU/Auto")
        global _CUDA_FELL_BACK
        try_cuda = device == Device.CUDA or (device == Device.AUTO and CUDA in available and not _CUDA_FELL_BACK
                                             and nvidia_driver_present())
        # a bundled float32 file with a float16 twin runs the twin on a card with tensor cores
        # (what was asked for stays in ``requested``; ``path`` is the file that runs)
        self.requested = self.path
        twin = self._fp16_twin(self.path, fp16) if try_cuda and fp16 is not False else None
        self.path = twin or self.path
        self.session = self._session(ort, [CUDA, CPU] if try_cuda else [CPU], device, threads)
        self.providers = self.session.get_providers()
        if try_cuda and CUDA not in self.providers:
            _CUDA_FELL_BACK = True
            if device == Device.CUDA:
                raise DeviceUnavailableError(
                    "CUDA was requested but no usable NVIDIA GPU / CUDA runtime was found "
                    "(onnxruntime fell back to CPU); choose CPU or Auto")
            # Auto without a usable GPU: a session made for the CPU alone (its memory options),
            # on the file that was asked for
            self.path = self.requested
            self.session = self._session(ort, [CPU], device, threads)
            self.providers = self.session.get_providers()
        self.card = ModelCard.from_metadata(self.session.get_modelmeta().custom_metadata_map)
        if self.card.input_domain != self.kind:
            raise ModelError(f"model '{self.card.name}' is a '{self.card.input_domain}' network, "
                             f"not {self.kind_label}")
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1 or len(outputs) != 1:
            raise ModelError(f"the model must have one input and one output, it has "
                             f"{len(inputs)} and {len(outputs)}")
        shape = inputs[0].shape
        if len(shape) != 4 or shape[1] not in (self.input_channels, str(self.input_channels)):
            raise ModelError(f"the model input must be (N, {self.input_channels}, H, W), got {shape}")
        self.input_name = inputs[0].name
        self.output_name = outputs[0].name
        self.sha256 = file_sha256(self.path)
        on_cuda = CUDA in self.providers
        # tiles per run in :meth:`many` (``batch`` 0: CUDA_BATCH on CUDA, 1 on the CPU)
        self.batch_size = max(1, int(batch) if batch else (CUDA_BATCH if on_cuda else 1))
        # runs go through IO binding (:class:`_Bound`) on CUDA; on the CPU onnxruntime reads the
        # numpy array in place, which a bound buffer would only copy (settable, for tests)
        self.io_binding = on_cuda
        self._bound: Dict[tuple, _Bound] = {}

    @staticmethod
    def _fp16_twin(path: str, fp16: Optional[bool]) -> Optional[str]:
        return None

    def _session(self, ort, providers: List[str], device: Device, threads: int):
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            opts.intra_op_num_threads = int(threads)
        if not self.spin:
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if providers == [CPU]:
            # Without the memory pattern (one block planned for all of a run's tensors, grown by
            # powers of two in the arena) the CPU arena reuses freed tensors: a 768 x 768 tile of
            # the lite int8 U-Net takes 216 MiB instead of 386, its growth from 640 to 768 pixels
            # 37 MiB instead of 153, at the same speed within 3 % (float32 U-Net: 557 MiB instead
            # of 728). Auto in one process, tile 768: 343 -> 299 MiB at 2048^2, 458 -> 387 at 4096^2.
            opts.enable_mem_pattern = False
        # A CUDA provider that cannot start only logs and falls back to CPU; the caller checks.
        opts.log_severity_level = 4 if device == Device.AUTO else 3
        try:
            return ort.InferenceSession(self.path, sess_options=opts, providers=providers)
        except Exception as err:
            if device == Device.CUDA:
                raise DeviceUnavailableError(f"CUDA could not be initialised: {err}") from None
            raise _load_error(self.path, err, ort) from None

    @property
    def device_used(self) -> str:
        return "CUDA" if CUDA in self.providers else "CPU"

    def _run(self, batch: np.ndarray) -> np.ndarray:
        try:
            if self.io_binding:
                y = self._binding(batch.shape)(batch)
            else:
                y = self.session.run([self.output_name], {self.input_name: batch})[0]
        except Exception as err:
            many = f"batch of {batch.shape[0]} " if batch.shape[0] > 1 else ""
            raise ModelError(f"the model failed on a {many}{batch.shape[-2]}x{batch.shape[-1]} tile"
                             f"{'s' if many else ''}: {err}") from None
        expected = (batch.shape[0], 1) + batch.shape[2:]
        if y.shape != expected:
            raise ModelError(f"the model returned shape {y.shape} for input {batch.shape}; expected {expected}")
        return y

    def _binding(self, shape: tuple) -> "_Bound":
        bound = self._bound.pop(shape, None)
        if bound is None:
            if len(self._bound) >= BOUND_SHAPES:  # the oldest shape's buffers go
                self._bound.pop(next(iter(self._bound)))
            bound = _Bound(self, shape)
        self._bound[shape] = bound  # most recent last
        return bound

    def _run_split(self, batch: np.ndarray) -> np.ndarray:
        """:meth:`_run`, a batch that fails split in halves (down to single tiles, whose error is
        the one raised) and ``batch_size`` lowered to the size that ran: a card without the memory
        for CUDA_BATCH tiles still runs them, a few at a time."""
        try:
            return self._run(batch)
        except ModelError:
            n = batch.shape[0]
            if n == 1:
                raise
        half = (n + 1) // 2
        first = self._run_split(batch[:half])
        self.batch_size = min(self.batch_size, half)
        return np.concatenate([first, self._run_split(batch[half:])])


class _Bound:
    """One IO binding of a network's session for one input shape (N, C, H, W): the input buffer
    allocated once on the session's device, each run copying a host batch into it; the output
    allocated by onnxruntime on the device (from its arena) and copied back."""

    def __init__(self, net: _OnnxNetwork, shape: tuple):
        ort = import_onnxruntime()
        device = "cuda" if CUDA in net.providers else "cpu"
        self.session = net.session
        self.input = ort.OrtValue.ortvalue_from_shape_and_type(list(shape), np.float32, device, 0)
        self.binding = net.session.io_binding()
        self.binding.bind_ortvalue_input(net.input_name, self.input)
        self.binding.bind_output(net.output_name, device)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        self.input.update_inplace(np.ascontiguousarray(batch, dtype=np.float32))
        self.session.run_with_iobinding(self.binding)
        return self.binding.copy_outputs_to_cpu()[0]


class OnnxDenoiser(_OnnxNetwork):
    """A log-domain despeckling network: float32 (H, W) normalised log in, same shape out.

    On CUDA a bundled float32 file with a float16 twin in the manifest runs the twin where
    :func:`fp16_capable` (``fp16`` None), always (True) or never (False); ``path`` then names the
    twin, ``requested`` the file asked for."""

    @staticmethod
    def _fp16_twin(path: str, fp16: Optional[bool]) -> Optional[str]:
        if not (fp16 or fp16_capable()):
            return None
        from .models import fp16_twin
        return fp16_twin(path)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Run on one tile: float32 (H, W) -> float32 (H, W)."""
        return self._run_split(np.ascontiguousarray(x, dtype=np.float32)[None, None])[0, 0]

    def many(self, xs: Sequence[np.ndarray]) -> List[np.ndarray]:
        """Run on several tiles, float32 (H, W) each -> their outputs, in order: tiles of one shape
        stacked ``batch_size`` at a time (one onnxruntime run each), the same values as one
        :meth:`__call__` per tile (to float32 rounding of the batched kernels)."""
        out: List[Optional[np.ndarray]] = [None] * len(xs)
        groups: Dict[tuple, List[int]] = {}
        for i, x in enumerate(xs):
            groups.setdefault(np.shape(x), []).append(i)
        for shape, idx in groups.items():
            k = 0
            while k < len(idx):
                part = idx[k:k + self.batch_size]
                batch = np.stack([np.asarray(xs[i], dtype=np.float32) for i in part])[:, None]
                for i, y in zip(part, self._run_split(batch)):
                    out[i] = y[0]
                k += len(part)
        return out


class OnnxGaussianDenoiser(_OnnxNetwork):
    """A Gaussian denoiser with a noise-level map input (MuLog's regulariser).

    ``denoiser(x, sigma)``: x float32 (K, H, W), K channels, each with white Gaussian noise of
    standard deviation sigma[k] in the channel's own units, zero-centred by the caller (the card's
    ``norm_offset`` is subtracted too); returns float32 (K, H, W). Channels run as one batch.
    """

    input_channels = 2
    # MuLog alternates each run with numpy work (the proximal step) that the spinning threads
    # would slow down: 256 x 256 C2 ran 10 % faster without (A/B, 2 cores); the despecklers' tiles
    # follow each other and showed no difference
    spin = False
    kind = "gaussian"
    kind_label = "a Gaussian denoiser"

    def __call__(self, x: np.ndarray, sigma) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        if x.ndim == 2:
            return self(x[None], np.atleast_1d(sigma))[0]
        sigma = np.broadcast_to(np.asarray(sigma, dtype=np.float32), (x.shape[0],))
        offset = 0.0 if isinstance(self.card.norm_offset, str) else float(self.card.norm_offset)
        scale = float(self.card.norm_scale)
        batch = np.empty((x.shape[0], 2) + x.shape[1:], dtype=np.float32)
        batch[:, 0] = (x - offset) / scale
        batch[:, 1] = (sigma / scale)[:, None, None]
        return self._run(batch)[:, 0] * scale + offset

    def denoise_map(self, x: np.ndarray, sigma: np.ndarray) -> np.ndarray:
        """One channel with a per-pixel noise level: x and sigma float (H, W) in the channel's
        units (x zero-centred by the caller); returns float32 (H, W)."""
        x = np.asarray(x, dtype=np.float32)
        sigma = np.broadcast_to(np.asarray(sigma, dtype=np.float32), x.shape)
        offset = 0.0 if isinstance(self.card.norm_offset, str) else float(self.card.norm_offset)
        scale = float(self.card.norm_scale)
        batch = np.empty((1, 2) + x.shape, dtype=np.float32)
        batch[0, 0] = (x - offset) / scale
        batch[0, 1] = sigma / scale
        return self._run(batch)[0, 0] * scale + offset
