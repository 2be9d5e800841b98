"""PolSARpro C2 / C3 / T3 folders -> one multiband GeoTIFF, streamed. No QGIS.

A PolSARpro matrix folder holds one float32 little-endian file per element (``T11.bin``,
``T12_real.bin``...), optionally an ENVI header beside each (``T11.bin.hdr``), a
``config.txt`` (Nrow, Ncol, PolarCase, PolarType) and ``mask_valid_pixels.bin``.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import numpy as np

from ..core.errors import CanceledError, InvalidInputError
from ..core.polsar import MatrixType, band_names
from .pipeline import NullProgress, Progress, provenance
from .raster_io import OutputSpec, RasterWriter, gdal

ROWS_PER_STRIP = 256
MASK_FILE = "mask_valid_pixels.bin"


@dataclass(frozen=True)
class PolsarproFolder:
    path: str
    matrix: MatrixType
    rows: int
    cols: int
    files: Tuple[str, ...]          # in PolSARpro band order
    mask: Optional[str]
    geotransform: Optional[tuple]
    projection: str


def _read_config(folder: str) -> Dict[str, str]:
    path = os.path.join(folder, "config.txt")
    if not os.path.isfile(path):
        return {}
    lines = [ln.strip() for ln in open(path, encoding="utf-8", errors="replace")]
    lines = [ln for ln in lines if ln and not set(ln) <= {"-"}]
    return {lines[i]: lines[i + 1] for i in range(0, len(lines) - 1, 2)}


def _read_header(path: str) -> Dict[str, str]:
    text = open(path, encoding="utf-8", errors="replace").read()
    return {m.group(1).strip().lower(): m.group(2).strip() for m in re.finditer(r"^\s*([^=\n]+?)\s*=\s*(.*)$", text, re.M)}


def _matrix_folder(path: str) -> Tuple[str, MatrixType]:
    """The folder holding the element files, and which matrix they make."""
    candidates = [path] + [os.path.join(path, d) for d in ("T3", "C3", "C2")]
    for folder in candidates:
        names = set(os.listdir(folder)) if os.path.isdir(folder) else set()
        for matrix in (MatrixType.T3, MatrixType.C3, MatrixType.C2):
            files = {f"{n}.bin" for n in band_names(matrix)}
            if files <= names:
                return folder, matrix
    raise InvalidInputError(f"'{path}' is not a PolSARpro T3, C3 or C2 folder: it lacks the element files "
                            "(e.g. T11.bin ... T33.bin, or C11.bin, C12_real.bin, C12_imag.bin, C22.bin)")


def inspect_folder(path: str, rows: Optional[int] = None, cols: Optional[int] = None) -> PolsarproFolder:
    """Find the matrix type, the size (config.txt, else an ENVI header, else ``rows``/``cols``)
    and the georeferencing (from the ENVI headers' map info, via GDAL) of a PolSARpro folder."""
    if not os.path.isdir(path):
        raise InvalidInputError(f"'{path}' is not a folder")
    folder, matrix = _matrix_folder(path)
    files = tuple(os.path.join(folder, f"{n}.bin") for n in band_names(matrix))
    config = _read_config(folder)
    first_hdr = files[0] + ".hdr"
    header = _read_header(first_hdr) if os.path.isfile(first_hdr) else {}
    if header:
        if header.get("data type", "4") != "4":
            raise InvalidInputError(f"{first_hdr}: data type {header['data type']} is not float32 (4)")
        if header.get("byte order", "0") != "0":
            raise InvalidInputError(f"{first_hdr}: big-endian files are not supported")
    try:
        if "Nrow" in config and "Ncol" in config:
            size = int(config["Nrow"]), int(config["Ncol"])
        elif "lines" in header and "samples" in header:
            size = int(header["lines"]), int(header["samples"])
        else:
            size = None
    except ValueError as err:
        raise InvalidInputError(f"unreadable size in config.txt or {first_hdr}: {err}") from None
    nbytes = os.path.getsize(files[0])
    if size is None:
        if rows and cols:
            size = int(rows), int(cols)
        elif rows or cols:
            known = int(rows or cols)
            if nbytes % (4 * known):
                raise InvalidInputError(f"{files[0]} holds {nbytes // 4} values, not a multiple of {known}")
            size = (known, nbytes // 4 // known) if rows else (nbytes // 4 // known, known)
        else:
            raise InvalidInputError(f"'{folder}' has neither config.txt nor ENVI headers: give the number of rows "
                                    "or columns")
    n_rows, n_cols = size
    for f in files + ((os.path.join(folder, MASK_FILE),) if os.path.isfile(os.path.join(folder, MASK_FILE)) else ()):
        if os.path.getsize(f) != 4 * n_rows * n_cols:
            raise InvalidInputError(f"{f} has {os.path.getsize(f)} bytes, expected {4 * n_rows * n_cols} for "
                                    f"{n_rows} rows x {n_cols} columns of float32")
    geotransform, projection = None, ""
    if header:
        ds = gdal.Open(files[0])
        if ds is not None:
            gt = ds.GetGeoTransform(can_return_null=True)
            if gt is not None and "map info" in header:
                geotransform, projection = gt, ds.GetProjection()
            ds = None
    mask = os.path.join(folder, MASK_FILE)
    return PolsarproFolder(folder, matrix, n_rows, n_cols, files, mask if os.path.isfile(mask) else None,
                           geotransform, projection)


def import_polsarpro(path: str, dst_path: str, rows: Optional[int] = None, cols: Optional[int] = None,
                     progress: Optional[Progress] = None,
                     extra_metadata: Optional[Dict[str, str]] = None) -> PolsarproFolder:
    """Write a PolSARpro folder as a Float32 GeoTIFF with 4 or 9 bands in PolSARpro order, band
    descriptions set, NaN (declared nodata) where the valid-pixel mask is 0 or a value is not
    finite. Streams ``ROWS_PER_STRIP`` rows at a time."""
    progress = progress or NullProgress()
    info = inspect_folder(path, rows, cols)
    maps: List[np.memmap] = [np.memmap(f, dtype="<f4", mode="r", shape=(info.rows, info.cols)) for f in info.files]
    mask = np.memmap(info.mask, dtype="<f4", mode="r", shape=(info.rows, info.cols)) if info.mask else None
    metadata = provenance(matrix=info.matrix.name, source_folder=info.path)
    metadata.update(extra_metadata or {})
    names = band_names(info.matrix)
    spec = OutputSpec(info.cols, info.rows, info.geotransform, info.projection, float("nan"), metadata,
                      bands=len(names), band_descriptions=names)
    with RasterWriter(dst_path, spec) as writer:
        for r0 in range(0, info.rows, ROWS_PER_STRIP):
            if progress.is_canceled():
                raise CanceledError("canceled by the user")
            r1 = min(info.rows, r0 + ROWS_PER_STRIP)
            strip = np.stack([np.asarray(m[r0:r1]) for m in maps]).astype(np.float32)
            bad = ~np.isfinite(strip).all(axis=0)
            if mask is not None:
                bad |= np.asarray(mask[r0:r1]) == 0
            strip[:, bad] = np.nan
            writer.write(r0, 0, strip)
            writer.release_cache()
            progress.set_progress(100.0 * r1 / info.rows)
        writer.commit()
    del maps, mask
    return info
