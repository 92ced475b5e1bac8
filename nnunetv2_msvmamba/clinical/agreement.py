"""Agreement of a measurement with a reference over patients: Pearson r, bias (mean of measurement minus
reference), the Bland-Altman limits of agreement (bias ± 1.96 SD of the differences, sample SD), and the mean
absolute error. Pairs where either value is undefined (NaN) are left out."""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

LIMITS_OF_AGREEMENT_Z = 1.96


def agreement(measured: Sequence[float], reference: Sequence[float]) -> dict:
    """n, pearson_r, bias, sd_difference, loa_lower, loa_upper, mae of the paired values (NaN when undefined:
    r needs two pairs and variation in both, the SD two pairs)."""
    measured, reference = np.asarray(measured, dtype=float), np.asarray(reference, dtype=float)
    both = np.isfinite(measured) & np.isfinite(reference)
    x, y = measured[both], reference[both]
    n = int(both.sum())
    difference = x - y
    bias = float(difference.mean()) if n else math.nan
    sd = float(difference.std(ddof=1)) if n > 1 else math.nan
    r = math.nan
    if n > 1 and np.ptp(x) > 0 and np.ptp(y) > 0:
        r = float(np.corrcoef(x, y)[0, 1])
    return {"n": n, "pearson_r": r, "bias": bias, "sd_difference": sd,
            "loa_lower": bias - LIMITS_OF_AGREEMENT_Z * sd, "loa_upper": bias + LIMITS_OF_AGREEMENT_Z * sd,
            "mae": float(np.abs(difference).mean()) if n else math.nan}
