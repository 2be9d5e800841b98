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


def resolve_domain(domain: Domain | int, is_complex: bool) -> Domain:
    """Resolve ``AUTO``: complex band type -> COMPLEX, anything else -> INTENSITY.

    An explicit choice must agree with the band type: COMPLEX needs a complex band and a
    complex band can only be read as COMPLEX.
    """
    try:
        domain = Domain(int(domain))
    except ValueError:
        raise InvalidInputError(f"unknown input domain {domain!r}; expected 0..4") from None
    if domain == Domain.AUTO:
        return Domain.COMPLEX if is_complex else Domain.INTENSITY
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
