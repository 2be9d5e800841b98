"""Radiometric domains, the log transform and its debiasing.

Domains (the order is public: it is the ``INPUT_DOMAIN`` enum of the Processing algorithms):

* ``INTENSITY``  linear power, I = |z|^2, > 0 where valid
* ``AMPLITUDE``  A = sqrt(I), > 0 where valid
* ``DECIBELS``   10 * log10(I), finite where valid
* ``COMPLEX``    single-look complex z; its intensity is |z|^2. Results come back as intensity.

For an L-look intensity I = R * S with S ~ Gamma(L, 1/L):
``E[log I] = log R + digamma(L) - log L`` and ``Var[log I] = trigamma(L)``.
:func:`log_bias` and :func:`log_variance` give these two constants; they are defined here
once and reused by the plugin's pipeline and by ``training/``.
"""
from __future__ import annotations

import enum
import math
from typing import Optional, Tuple

import numpy as np

from .errors import InvalidInputError


class Domain(enum.IntEnum):
    AUTO = 0
    INTENSITY = 1
    AMPLITUDE = 2
    DECIBELS = 3
    COMPLEX = 4

    @property
    def label(self) -> str:
        return DOMAIN_LABELS[self]


DOMAIN_LABELS = {
    Domain.AUTO: "Auto",
    Domain.INTENSITY: "Intensity (linear power)",
    Domain.AMPLITUDE: "Amplitude",
    Domain.DECIBELS: "Decibels (10·log10 intensity)",
    Domain.COMPLEX: "Complex SLC",
}


# Auto domain and the domain check (see :func:`guess_domain`, :func:`check_domain_loss`)
LOSS_LIMIT = 0.005          # share of valid pixels that may turn into nodata before it is an error
DB_RANGE = (-80.0, 60.0)    # 1st and 99th percentiles of a band in decibels lie in this range


def guess_domain(sample: Optional[np.ndarray], is_integer: bool = False) -> Tuple[Domain, str]:
    """The domain of a real band from a sample of its valid (not nodata) values, and why.

    * negative values in more than ``LOSS_LIMIT`` of the sample, with the 1st-99th percentiles
      inside ``DB_RANGE``: DECIBELS (intensity and amplitude are never negative);
    * an integer band without negative values: AMPLITUDE (digital numbers, as Sentinel-1 GRD
      and most detected products ship them);
    * anything else: INTENSITY.
    """
    v = np.asarray(sample if sample is not None else [], dtype=np.float64).ravel()
    v = v[np.isfinite(v)]
    if v.size:
        negative = float(np.mean(v < 0))
        p1, p99 = np.percentile(v, [1, 99])
        if negative > LOSS_LIMIT and DB_RANGE[0] <= p1 and p99 <= DB_RANGE[1]:
            return Domain.DECIBELS, (f"{negative:.0%} of the values are negative and they span "
                                     f"{p1:.1f} to {p99:.1f}: read as decibels")
        if is_integer and negative == 0:
            return Domain.AMPLITUDE, "an integer band without negative values: read as amplitude (digital numbers)"
    elif is_integer:
        return Domain.AMPLITUDE, "an integer band: read as amplitude (digital numbers)"
    return Domain.INTENSITY, "real values, none negative: read as intensity (linear power)"


def check_domain_loss(sample: np.ndarray, domain: Domain) -> None:
    """Raise :class:`InvalidInputError` when more than ``LOSS_LIMIT`` of a sample of valid (not
    nodata) values would become nodata in ``domain`` (e.g. decibels read as intensity: every
    negative value is lost). Exact zeros and non-finite values do not count: they are nodata in
    every domain."""
    v = np.asarray(sample)
    if v.size == 0 or domain == Domain.COMPLEX:
        return
    v = v.astype(np.float64, copy=False).ravel()
    counted = np.isfinite(v) & (v != 0)
    n = int(counted.sum())
    if n == 0:
        return
    with np.errstate(invalid="ignore"):
        lost = counted & ~(np.isfinite(to_intensity(v, domain)))
    share = float(lost.sum()) / n
    if share <= LOSS_LIMIT:
        return
    likely, why = guess_domain(v[counted])
    hint = (f"the values look like {likely.label} ({why}): choose that input domain"
            if likely != domain else "check the input domain and the nodata value")
    raise InvalidInputError(f"{share:.1%} of the valid pixels would become nodata when read as "
                            f"{domain.label} (they are negative or out of range); {hint}")


def resolve_domain(domain: Domain | int, is_complex: bool, sample: Optional[np.ndarray] = None,
                   is_integer: bool = False) -> Domain:
    """Resolve ``AUTO``: complex band type -> COMPLEX; else, given a ``sample`` of the band's
    valid values, :func:`guess_domain`; without one, INTENSITY.

    An explicit choice must agree with the band type: COMPLEX needs a complex band and a
    complex band can only be read as COMPLEX.
    """
    try:
        domain = Domain(int(domain))
    except ValueError:
        raise InvalidInputError(f"unknown input domain {domain!r}; expected 0..4") from None
    if domain == Domain.AUTO:
        if is_complex:
            return Domain.COMPLEX
        return guess_domain(sample, is_integer)[0] if (sample is not None or is_integer) else Domain.INTENSITY
    if domain == Domain.COMPLEX and not is_complex:
        raise InvalidInputError("input domain 'Complex SLC' needs a complex band (CInt16, CFloat32...), "
                                "but the band holds real values")
    if is_complex and domain != Domain.COMPLEX:
        raise InvalidInputError(f"the band is complex, so the input domain must be 'Complex SLC' or Auto, "
                                f"not '{domain.label}'")
    return domain


def output_domain(domain: Domain) -> Domain:
    """Domain of the despeckled output: the input's, except COMPLEX -> INTENSITY."""
    return Domain.INTENSITY if domain == Domain.COMPLEX else domain


def to_intensity(values: np.ndarray, domain: Domain) -> np.ndarray:
    """Convert ``values`` (H, W) in ``domain`` to float64 linear intensity.

    Invalid inputs (NaN, inf, amplitude/intensity <= 0) become NaN; nothing raises.
    """
    if domain == Domain.COMPLEX:
        z = np.asarray(values)
        intensity = z.real.astype(np.float64) ** 2 + z.imag.astype(np.float64) ** 2
    elif domain == Domain.INTENSITY:
        intensity = np.asarray(values, dtype=np.float64).copy()
    elif domain == Domain.AMPLITUDE:
        a = np.asarray(values, dtype=np.float64)
        intensity = np.where(a > 0, a * a, np.nan)
    elif domain == Domain.DECIBELS:
        with np.errstate(over="ignore", invalid="ignore"):
            intensity = np.power(10.0, np.asarray(values, dtype=np.float64) / 10.0)
    else:
        raise InvalidInputError(f"cannot convert domain {domain!r} to intensity; resolve AUTO first")
    with np.errstate(invalid="ignore"):
        intensity[~(np.isfinite(intensity) & (intensity > 0))] = np.nan
    return intensity


def from_intensity(intensity: np.ndarray, domain: Domain) -> np.ndarray:
    """Convert linear intensity back to ``output_domain(domain)`` (float64, NaN kept)."""
    domain = output_domain(domain)
    intensity = np.asarray(intensity, dtype=np.float64)
    if domain == Domain.INTENSITY:
        return intensity
    with np.errstate(invalid="ignore", divide="ignore"):
        if domain == Domain.AMPLITUDE:
            return np.sqrt(intensity)
        if domain == Domain.DECIBELS:
            return 10.0 * np.log10(intensity)
    raise InvalidInputError(f"cannot convert intensity to domain {domain!r}")


def _check_looks(looks: float) -> float:
    looks = float(looks)
    if not (math.isfinite(looks) and looks > 0):
        raise InvalidInputError(f"the number of looks must be a positive number, got {looks}")
    return looks


def digamma(x: float) -> float:
    """Digamma function for x > 0 (recurrence + asymptotic series, |error| < 1e-12)."""
    x = float(x)
    if not x > 0:
        raise ValueError(f"digamma needs x > 0, got {x}")
    acc = 0.0
    while x < 10.0:
        acc -= 1.0 / x
        x += 1.0
    inv2 = 1.0 / (x * x)
    series = inv2 * (1 / 12 - inv2 * (1 / 120 - inv2 * (1 / 252 - inv2 * (1 / 240 - inv2 / 132))))
    return acc + math.log(x) - 0.5 / x - series


def trigamma(x: float) -> float:
    """Trigamma function for x > 0 (recurrence + asymptotic series, |error| < 1e-12)."""
    x = float(x)
    if not x > 0:
        raise ValueError(f"trigamma needs x > 0, got {x}")
    acc = 0.0
    while x < 10.0:
        acc += 1.0 / (x * x)
        x += 1.0
    inv = 1.0 / x
    inv2 = inv * inv
    series = inv + inv2 / 2 + inv * inv2 * (1 / 6 - inv2 * (1 / 30 - inv2 * (1 / 42 - inv2 / 30)))
    return acc + series


def log_bias(looks: float) -> float:
    """E[log S] for L-look speckle S ~ Gamma(L, 1/L): digamma(L) - log(L) (< 0)."""
    looks = _check_looks(looks)
    return digamma(looks) - math.log(looks)


def log_variance(looks: float) -> float:
    """Var[log S] for L-look speckle: trigamma(L) (pi^2/6 for L = 1)."""
    return trigamma(_check_looks(looks))


def debiased_log(intensity: np.ndarray, looks: float) -> np.ndarray:
    """log(I) - (digamma(L) - log L): an unbiased estimate of log R. NaN where I is invalid."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.log(np.asarray(intensity, dtype=np.float64)) - log_bias(looks)


def normalise(log_values: np.ndarray, offset: float, scale: float) -> np.ndarray:
    """(log_values - offset) / scale, the network's input domain."""
    return (np.asarray(log_values, dtype=np.float64) - offset) / scale


def denormalise(net_values: np.ndarray, offset: float, scale: float) -> np.ndarray:
    """Inverse of :func:`normalise`."""
    return np.asarray(net_values, dtype=np.float64) * scale + offset
