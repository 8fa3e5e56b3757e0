"""A locality prior for strategy 1's rotations: each head starts on one neighbour.

Per axis, P(Δ) = Σ_s α_s cos ω_sΔ + β_s sin ω_sΔ. Choosing α_s = A cos ω_sδ and
β_s = A sin ω_sδ gives P(Δ) = A Σ_s cos ω_s(Δ − δ), largest at Δ = δ: with
one offset δ_h = (δ_row, δ_col) per head, a head starts attending around the
token at that offset, like one tap of a convolution (Cordonnier et al. 2020,
arXiv:1911.03584). The exact positional factor makes large A harmless; inside
FAVOR+ (the paper's path) large positional norms inflate the estimator's
variance.
"""

import itertools

import numpy as np


def initial_frequencies(num_scales, max_timescale):
    """ω_s = T^(−2(s−1)/(2S)), s = 1…S: the sinusoid encoding's initial frequencies."""
    exponents = -2.0 * np.arange(num_scales) / (2.0 * num_scales)
    return (float(max_timescale) ** exponents).astype("float32")


def head_offsets(num_heads):
    """Offsets (query − key, rows and columns) for the heads, nearest first.

    The 8 neighbours of the 3×3 neighbourhood (the residual path already
    carries the token itself), then the next ring, and so on.
    """
    offsets = []
    for radius in itertools.count(1):
        ring = [
            (dr, dc)
            for dr in range(-radius, radius + 1)
            for dc in range(-radius, radius + 1)
            if max(abs(dr), abs(dc)) == radius
        ]
        offsets += sorted(ring, key=lambda o: (abs(o[0]) + abs(o[1]), -o[0], -o[1]))
        if len(offsets) >= num_heads:
            return offsets[:num_heads]


def local_rotations(num_heads, frequencies, amplitude):
    """(α, β), each float32 `[heads, 2·S]`: rows' S pairs, then columns'.

    Args:
        num_heads: int.
        frequencies: `[S]` initial ω of the sinusoid encoding.
        amplitude: float A >= 0 (the bump's height is A·S before the 1/√d).
    """
    frequencies = np.asarray(frequencies, "float64")
    alpha, beta = [], []
    for offset in head_offsets(num_heads):
        angles = np.concatenate([frequencies * offset[0], frequencies * offset[1]])
        alpha.append(amplitude * np.cos(angles))
        beta.append(amplitude * np.sin(angles))
    return np.array(alpha, "float32"), np.array(beta, "float32")
