"""Block-wise GDAL reading and writing. Never imports QGIS.

GDAL's Python exceptions are not switched on globally (that would change behaviour for other
QGIS plugins); every call that can fail is checked here and turned into a typed error.
"""
from __future__ import annotations

import os
import re
import threading
import uuid
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import numpy as np

from ..core.errors import InvalidInputError, RuntimeDependencyError
from ..core.tiling import Window

try:
    from osgeo import gdal
except ImportError as err:  # pragma: no cover - GDAL ships with QGIS
    raise RuntimeDependencyError("GDAL's Python bindings (osgeo) are not installed") from err

COMPLEX_TYPES = {gdal.GDT_CInt16, gdal.GDT_CInt32, gdal.GDT_CFloat32, gdal.GDT_CFloat64}
INTEGER_TYPES = {getattr(gdal, n) for n in ("GDT_Byte", "GDT_Int8", "GDT_UInt16", "GDT_Int16", "GDT_UInt32",
                                            "GDT_Int32", "GDT_UInt64", "GDT_Int64") if hasattr(gdal, n)}
# DEFLATE level 1: 0.59 s instead of 1.04 s (level 6, GDAL's default) for a 4096 x 4096 float32
# output, 1 % larger; at level 6 compressing took 60 % of a Lee filter's time
GTIFF_OPTIONS = ["TILED=YES", "BLOCKXSIZE=256", "BLOCKYSIZE=256", "COMPRESS=DEFLATE", "ZLEVEL=1",
                 "PREDICTOR=3", "BIGTIFF=IF_SAFER"]
# GDAL compresses the blocks of a flushed row on every core while the caller goes on; the
# compressed blocks are still written to the file by the calling thread, in order (so a failed
# write reaches _WriteErrors' handler there), and the file is the same. 4096 x 4096 float32:
# 0.32 s instead of 0.56 s on two cores.
WRITE_OPTIONS = ["NUM_THREADS=ALL_CPUS"]


class _WriteErrors:
    """GDAL failures while RasterWriters are open. GDAL reports a failed write of a cached block
    (disk full, file size limit) only through its error handler, at eviction, flush or close, not
    as a failed WriteArray; a handler pushed while writers are open records them, so that a writer
    refuses to commit a truncated file. Thread-local like GDAL's handler stack: writers open and
    write on one thread."""

    def __init__(self):
        self.local = threading.local()

    def _state(self):
        st = self.local
        if not hasattr(st, "depth"):
            st.depth, st.failures = 0, []
        return st

    def open(self) -> int:
        st = self._state()
        if st.depth == 0:
            st.failures = []

            def handler(err_class, err_no, message, failures=st.failures):
                if err_class >= gdal.CE_Failure:
                    failures.append(str(message))
            st.handler = handler
            gdal.PushErrorHandler(handler)
        st.depth += 1
        return len(st.failures)

    def since(self, mark: int):
        return self._state().failures[mark:]

    def close(self) -> None:
        st = self._state()
        if st.depth > 0:
            st.depth -= 1
            if st.depth == 0:
                gdal.PopErrorHandler()


_WRITE_ERRORS = _WriteErrors()

# Files open for reading by a RasterSource: a RasterWriter refuses to replace one of them (an output
# path equal to the input would otherwise overwrite the user's data when the result is committed).
_READING: Counter = Counter()
_READING_LOCK = threading.Lock()


def _key(path: str) -> str:
    return os.path.normcase(os.path.realpath(str(path)))


def check_output(path: Optional[str]) -> None:
    """Refuse an empty output path, or one that a RasterSource of this run is reading."""
    if not str(path or "").strip():
        raise InvalidInputError("no output file was given")
    with _READING_LOCK:
        reading = _key(str(path)) in _READING
    if reading:
        raise InvalidInputError(f"the output '{path}' is an input of this run: choose another output "
                                "file (writing it would overwrite the input)")


def _gdal_error(default: str) -> str:
    msg = gdal.GetLastErrorMsg()
    return f"{default}: {msg}" if msg else default


class RasterSource:
    """One band of a raster opened read-only with GDAL."""

    def __init__(self, path: str, band: int = 1):
        self.path = str(path)
        try:
            ds = gdal.Open(self.path, gdal.GA_ReadOnly)
        except RuntimeError as err:  # GDAL with exceptions enabled by someone else
            raise InvalidInputError(f"cannot open raster '{self.path}': {err}") from None
        if ds is None:
            raise InvalidInputError(_gdal_error(f"cannot open raster '{self.path}'"))
        if ds.RasterCount < 1:
            raise InvalidInputError(f"raster '{self.path}' has no band")
        if not 1 <= int(band) <= ds.RasterCount:
            raise InvalidInputError(f"band {band} does not exist: '{self.path}' has "
                                    f"{ds.RasterCount} band{'s' if ds.RasterCount > 1 else ''}")
        self._ds = ds
        self._key = _key(self.path)
        with _READING_LOCK:
            _READING[self._key] += 1
        self.band_number = int(band)
        self._band = ds.GetRasterBand(self.band_number)
        self.width = ds.RasterXSize
        self.height = ds.RasterYSize
        self.data_type = self._band.DataType
        self.itemsize = max(1, gdal.GetDataTypeSize(self.data_type) // 8)
        self.is_complex = self.data_type in COMPLEX_TYPES
        self.is_integer = self.data_type in INTEGER_TYPES
        self.nodata: Optional[float] = self._band.GetNoDataValue()
        self.geotransform = ds.GetGeoTransform(can_return_null=True)
        self.projection = ds.GetProjection()
        self.gcps = ds.GetGCPs()
        self.gcp_projection = ds.GetGCPProjection()
        self.count = ds.RasterCount
        self.band_descriptions = tuple(ds.GetRasterBand(i + 1).GetDescription() for i in range(self.count))
        self.band_nodata = tuple(ds.GetRasterBand(i + 1).GetNoDataValue() for i in range(self.count))

    def read(self, window: Window) -> np.ndarray:
        """Raw values of ``window`` (native dtype, complex for complex bands)."""
        arr = self._band.ReadAsArray(window.col_off, window.row_off, window.width, window.height)
        if arr is None:
            raise InvalidInputError(_gdal_error(f"cannot read {window} from '{self.path}'"))
        return arr

    def read_bands(self, window: Window) -> np.ndarray:
        """Raw values of every band in ``window``: (bands, height, width), native dtype."""
        arr = self._ds.ReadAsArray(window.col_off, window.row_off, window.width, window.height)
        if arr is None:
            raise InvalidInputError(_gdal_error(f"cannot read {window} from '{self.path}'"))
        return arr.reshape((self.count, window.height, window.width))

    def strided(self, step: int):
        """Yield (rows read so far, raw values of rows and columns that are multiples of ``step``
        in the next strip): the regular sample grid [::step, ::step] of the band. Only the
        sampled rows are read (a striped GeoTIFF, as Sentinel-1 products are, then decodes one
        row in ``step``; a tiled one decodes each block once, from GDAL's cache), and the cache
        is released every few hundred rows (memory bounded by a strip)."""
        k = max(1, int(step))
        rows_per_read = max(k, (256 // k) * k)
        for r0 in range(0, self.height, rows_per_read):
            h = min(rows_per_read, self.height - r0)
            if k == 1:
                raw = self.read(Window(r0, 0, h, self.width))
            else:
                raw = np.stack([self.read(Window(r, 0, 1, self.width))[0, ::k] for r in range(r0, r0 + h, k)])
            self.release_cache()
            yield r0 + h, raw

    def invalid_mask(self, values: np.ndarray) -> np.ndarray:
        """True where ``values`` (one band) equal the band's nodata value."""
        return _nodata_mask(values, self.nodata)

    def invalid_mask_bands(self, values: np.ndarray) -> np.ndarray:
        """(height, width): True where any band is nodata or not finite."""
        bad = ~np.isfinite(values).all(axis=0)
        for b, nodata in enumerate(self.band_nodata):
            bad |= _nodata_mask(values[b], nodata)
        return bad

    def release_cache(self) -> None:
        """Drop GDAL's cached blocks of this dataset so memory stays bounded by the tile size."""
        self._ds.FlushCache()

    def close(self) -> None:
        self._band = None
        if self._ds is not None:
            with _READING_LOCK:
                _READING[self._key] -= 1
                if _READING[self._key] <= 0:
                    del _READING[self._key]
        self._ds = None

    def __enter__(self) -> "RasterSource":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _nodata_mask(values: np.ndarray, nodata: Optional[float]) -> np.ndarray:
    if nodata is None:
        return np.zeros(values.shape, dtype=bool)
    if np.isnan(nodata):
        return np.isnan(values)
    return values == nodata


def driver_for_path(path: str) -> str:
    """GDAL raster driver short name for the extension of ``path`` (GTiff for .tif/.tiff)."""
    ext = os.path.splitext(path)[1].lower().lstrip(".")
    if ext in ("tif", "tiff", ""):
        return "GTiff"
    for i in range(gdal.GetDriverCount()):
        drv = gdal.GetDriver(i)
        md = drv.GetMetadata() or {}
        if md.get("DCAP_RASTER") != "YES":
            continue
        if ext in (md.get("DMD_EXTENSIONS") or "").lower().split():
            if md.get("DCAP_CREATE") == "YES" or md.get("DCAP_CREATECOPY") == "YES":
                return drv.ShortName
    raise InvalidInputError(f"no GDAL raster driver can write files with extension '.{ext}' ({path})")


@dataclass
class OutputSpec:
    width: int
    height: int
    geotransform: Optional[Tuple[float, ...]]
    projection: str
    nodata: Optional[float]
    metadata: Dict[str, str]
    description: str = ""
    gcps: tuple = ()
    gcp_projection: str = ""
    bands: int = 1
    band_descriptions: tuple = ()


class RasterWriter:
    """Writes a Float32 raster (``spec.bands`` bands) into a temporary GeoTIFF beside the destination.

    Only :meth:`commit` puts the result at ``path`` (renamed, or converted with CreateCopy for
    other formats); :meth:`abort` (also called when leaving a ``with`` block on an exception)
    removes the temporary file, so no half-written file is ever left under the final name.
    """

    def __init__(self, path: str, spec: OutputSpec):
        check_output(path)
        self.path = str(path)
        self.driver = driver_for_path(self.path)
        directory = os.path.dirname(os.path.abspath(self.path))
        if not os.path.isdir(directory):
            try:
                os.makedirs(directory, exist_ok=True)
            except OSError as err:
                raise InvalidInputError(f"cannot create the output folder '{directory}': {err}") from None
        self.tmp_path = os.path.join(directory, f".{os.path.basename(self.path)}.{uuid.uuid4().hex[:8]}.partial.tif")
        drv = gdal.GetDriverByName("GTiff")
        direct = _direct_options(self.path) if self.driver == "GTiff" else None
        options = (GTIFF_OPTIONS if direct is None else direct) + WRITE_OPTIONS + (
            ["INTERLEAVE=BAND"] if spec.bands > 1 and not any(o.startswith("INTERLEAVE=") for o in direct or ())
            else [])
        ds = drv.Create(self.tmp_path, spec.width, spec.height, spec.bands, gdal.GDT_Float32, options)
        if ds is None:
            raise InvalidInputError(_gdal_error(f"cannot create the output raster '{self.path}'"))
        if spec.geotransform is not None:
            ds.SetGeoTransform(spec.geotransform)
        if spec.projection:
            ds.SetProjection(spec.projection)
        if spec.gcps:
            ds.SetGCPs(spec.gcps, spec.gcp_projection)
        descriptions = spec.band_descriptions or (spec.description,) * spec.bands
        self._bands = [ds.GetRasterBand(i + 1) for i in range(spec.bands)]
        for band, description in zip(self._bands, descriptions):
            if spec.nodata is not None:
                band.SetNoDataValue(float(spec.nodata))
            if description:
                band.SetDescription(description)
        ds.SetMetadata({k: str(v) for k, v in spec.metadata.items()})
        self._ds = ds
        self.spec = spec
        self.block_rows = self._bands[0].GetBlockSize()[1]
        self._mark = _WRITE_ERRORS.open()
        self._watching = True

    def _check_errors(self) -> None:
        failures = _WRITE_ERRORS.since(self._mark)
        if failures:
            raise InvalidInputError(f"cannot write '{self.path}' (disk full or file too large?): {failures[-1]}")

    def _stop_watching(self) -> None:
        if self._watching:
            self._watching = False
            _WRITE_ERRORS.close()

    def write(self, row_off: int, col_off: int, data: np.ndarray) -> None:
        """Write (height, width) data to a single-band raster or (bands, height, width) to all bands."""
        data = np.asarray(data)
        planes = data[None] if data.ndim == 2 else data
        if planes.shape[0] != len(self._bands):
            raise InvalidInputError(f"{planes.shape[0]} planes given for {len(self._bands)} bands")
        for band, plane in zip(self._bands, planes):
            if band.WriteArray(np.ascontiguousarray(plane, dtype=np.float32), col_off, row_off) != 0:
                raise InvalidInputError(_gdal_error(f"cannot write to '{self.path}' (disk full?)"))
        self._check_errors()

    def write_band(self, band: int, row_off: int, col_off: int, data: np.ndarray) -> None:
        """Write (height, width) data to band ``band`` (1-based) only."""
        if not 1 <= int(band) <= len(self._bands):
            raise InvalidInputError(f"band {band} does not exist in a {len(self._bands)}-band output")
        plane = np.ascontiguousarray(data, dtype=np.float32)
        if self._bands[int(band) - 1].WriteArray(plane, col_off, row_off) != 0:
            raise InvalidInputError(_gdal_error(f"cannot write to '{self.path}' (disk full?)"))
        self._check_errors()

    def release_cache(self) -> None:
        self._ds.FlushCache()
        self._check_errors()

    def commit(self) -> str:
        self._ds.FlushCache()
        self._ds, self._bands = None, []           # closing writes the last blocks and the directory
        try:
            self._check_errors()
        except InvalidInputError:
            self.abort()
            raise
        self._stop_watching()
        if self.driver == "GTiff":
            for suffix in ("", ".aux.xml"):
                if suffix and os.path.exists(self.path + suffix):
                    os.remove(self.path + suffix)
            os.replace(self.tmp_path, self.path)
        else:
            try:
                _create_copy(self.driver, self.path, self.tmp_path)
            except InvalidInputError:
                self.abort()
                raise
            gdal.Unlink(self.tmp_path)
        return self.path

    def abort(self) -> None:
        self._ds, self._bands = None, []
        self._stop_watching()
        if os.path.exists(self.tmp_path):
            gdal.Unlink(self.tmp_path)

    def __enter__(self) -> "RasterWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None or self._ds is not None:
            self.abort()


def _create_copy(driver: str, dst: str, src, options=(), shown: Optional[str] = None) -> None:
    """GDAL CreateCopy of ``src`` (a dataset or a path) to ``dst`` with ``driver``, flushed and
    closed; a failure GDAL reports only through its error handler (disk full) removes ``dst`` and
    raises like a failed copy. ``shown``: the path the messages name (default ``dst``)."""
    shown = shown or dst
    mark = _WRITE_ERRORS.open()
    try:
        ds = gdal.Open(src) if isinstance(src, str) else src
        out = gdal.GetDriverByName(driver).CreateCopy(dst, ds, 0, list(options)) if ds is not None else None
        if out is None:
            raise InvalidInputError(_gdal_error(f"cannot write '{shown}' with the {driver} driver"))
        out.FlushCache()
        out = ds = None
        failures = _WRITE_ERRORS.since(mark)
        if failures:
            if os.path.exists(dst):
                gdal.GetDriverByName(driver).Delete(dst)
            raise InvalidInputError(f"cannot write '{shown}' (disk full?): {failures[-1]}")
    finally:
        _WRITE_ERRORS.close()


def write_array(path: str, array: np.ndarray, geotransform=None, projection: str = "",
                nodata: Optional[float] = None, metadata: Optional[Dict[str, str]] = None) -> str:
    """Write a whole 2-D array as a Float32 raster (small rasters: tests, demo, benchmarks)."""
    spec = OutputSpec(array.shape[1], array.shape[0], geotransform, projection, nodata, metadata or {})
    with RasterWriter(path, spec) as writer:
        writer.write(0, 0, array)
        return writer.commit()


def parse_creation_options(text: Optional[str]) -> Tuple[Optional[str], List[str]]:
    """(driver or None, GDAL creation options) from a user's text: KEY=VALUE items separated by
    spaces, commas, semicolons or '|'; ``DRIVER=COG`` (or another GDAL raster driver) picks the
    output driver instead of the one the file extension implies."""
    items = [t for t in re.split(r"[\s,;|]+", str(text or "").strip()) if t]
    driver, options = None, []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise InvalidInputError(f"creation option '{item}' is not KEY=VALUE")
        if key.upper() == "DRIVER":
            driver = value
        else:
            options.append(f"{key.upper()}={value}")
    return driver, options


def _overview_factors(width: int, height: int, smallest: int = 256) -> List[int]:
    factors, f = [], 2
    while min(width, height) / f >= smallest / 2 and f <= 4096:
        factors.append(f)
        f *= 2
    return factors or [2]


def resolve_creation_options(path: str, creation_options: Optional[str]) -> Tuple[str, List[str]]:
    """(driver, full option list) that ``creation_options`` (a user's text, see
    :func:`parse_creation_options`) asks for an output at ``path``: the driver named by
    ``DRIVER=`` or implied by the extension, and the defaults (tiled, DEFLATE with the
    floating-point predictor) under the user's options. Checks them against the driver's list
    without touching any file, so that a typo is reported before the work, not after it;
    raises :class:`InvalidInputError`."""
    driver_name, options = parse_creation_options(creation_options)
    driver_name = driver_name or driver_for_path(path)
    drv = gdal.GetDriverByName(driver_name)
    if drv is None or not (drv.GetMetadataItem("DCAP_CREATECOPY") or drv.GetMetadataItem("DCAP_CREATE")):
        raise InvalidInputError(f"GDAL has no raster driver '{driver_name}' that can write files: "
                                "no output was kept")
    allowed = {a.upper() for a in re.findall(r"<Option[^>]*name=['\"]([^'\"]+)['\"]",
                                             drv.GetMetadataItem("DMD_CREATIONOPTIONLIST") or "")}
    unknown = [o for o in options if allowed and o.split("=", 1)[0] not in allowed]
    if unknown:
        raise InvalidInputError(f"the {driver_name} driver has no creation option {', '.join(unknown)} "
                                f"(it knows: {', '.join(sorted(allowed))}): no output was kept")
    defaults = {"GTiff": GTIFF_OPTIONS, "COG": ["COMPRESS=DEFLATE", "PREDICTOR=YES", "BIGTIFF=IF_SAFER"]}
    given = {o.split("=", 1)[0] for o in options}
    if "COMPRESS" in given:  # the DEFLATE level is the default's only
        given.add("ZLEVEL")
    return driver_name, [o for o in defaults.get(driver_name, []) if o.split("=", 1)[0] not in given] + options


# GeoTIFF creation options given for an output path (absolute), used by RasterWriter when it
# creates that file: the output is then written once with them instead of being rewritten after
_DIRECT: Dict[str, List[str]] = {}
_DIRECT_LOCK = threading.Lock()


def _direct_options(path: str) -> Optional[List[str]]:
    with _DIRECT_LOCK:
        options = _DIRECT.get(os.path.abspath(path))
    return None if options is None else list(options)


@contextmanager
def direct_creation_options(path: str, creation_options: Optional[str]):
    """Within the block, a GeoTIFF written to ``path`` by :class:`RasterWriter` is created with the
    user's creation options at once (the ``TILED``/``BLOCK*`` options of a GeoTIFF apply while it
    is written, so nothing is lost), saving the second pass :func:`finalize_output` would make.
    Validates the options first (:func:`resolve_creation_options`). Yields True when the options
    were taken this way (a GeoTIFF output with options); False otherwise (no options, or another
    driver such as COG, which GDAL only writes by copying)."""
    if not str(creation_options or "").strip():
        yield False
        return
    driver_name, options = resolve_creation_options(path, creation_options)
    if driver_name != "GTiff" or driver_for_path(path) != "GTiff":
        yield False
        return
    key = os.path.abspath(path)
    with _DIRECT_LOCK:
        _DIRECT[key] = options
    try:
        yield True
    finally:
        with _DIRECT_LOCK:
            _DIRECT.pop(key, None)


def finalize_output(path: str, creation_options: Optional[str] = None, overviews: bool = False,
                    options_applied: bool = False) -> str:
    """Rewrite a finished output with the user's GDAL creation options (and ``DRIVER=COG`` for a
    Cloud Optimized GeoTIFF), and/or with internal overviews (average of the linear values, by
    powers of 2 down to about 256 pixels). Without either, the file stays as written (tiled,
    DEFLATE-compressed GeoTIFF); ``options_applied``: the options were already used when the file
    was written (:func:`direct_creation_options`), so only overviews make a rewrite. The result
    replaces ``path`` only when everything succeeded; unknown options and write failures raise
    :class:`InvalidInputError` and remove the output."""
    if options_applied and not overviews:
        return path
    if not str(creation_options or "").strip() and not overviews:
        return path
    try:
        driver_name, options = resolve_creation_options(path, creation_options)
    except InvalidInputError:
        if os.path.exists(path):
            gdal.Unlink(path)
        raise
    directory = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{uuid.uuid4().hex[:8]}.partial.tif")
    mark = _WRITE_ERRORS.open()
    try:
        src = gdal.Open(path, gdal.GA_Update if overviews else gdal.GA_ReadOnly)
        if src is None:
            raise InvalidInputError(_gdal_error(f"cannot reopen '{path}'"))
        if overviews:  # built here for every driver, so that small rasters get them too
            if src.BuildOverviews("AVERAGE", _overview_factors(src.RasterXSize, src.RasterYSize)) != 0:
                raise InvalidInputError(_gdal_error(f"cannot build overviews of '{path}'"))
            failures = _WRITE_ERRORS.since(mark)
            if failures:
                raise InvalidInputError(f"cannot write the overviews of '{path}' (disk full?): {failures[-1]}")
            if driver_name == "GTiff":
                options = options + ["COPY_SRC_OVERVIEWS=YES"]
        if driver_name == "COG":
            options = [o for o in options if not o.startswith("OVERVIEWS=")] + [
                "OVERVIEWS=FORCE_USE_EXISTING" if overviews else "OVERVIEWS=NONE"]
        _create_copy(driver_name, tmp, src, options, shown=path)
        src = None
    except InvalidInputError:
        src = None
        for p in (tmp, path):
            if os.path.exists(p):
                gdal.Unlink(p)
        raise
    finally:
        _WRITE_ERRORS.close()
    for suffix in (".ovr", ".aux.xml"):
        if os.path.exists(path + suffix):
            os.remove(path + suffix)
    os.replace(tmp, path)
    return path
