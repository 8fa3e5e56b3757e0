"""Orthogonal Gaussian random matrices for FAVOR+ (Performer, arXiv:2009.14794).

W ∈ R^(m×d) stacks ⌈m/d⌉ blocks, each the Q of a QR decomposition of a d×d
standard Gaussian matrix (rows orthonormal within a block); row i is then
rescaled by the norm of an independent d-dim Gaussian vector (`"gaussian"`) or
by √d (`"fixed"`). Draws are stateless and backend-independent
(`counter_random`): the same seed gives the same matrix on every replica,
every rerun and every Keras backend (up to the backends' QR and log/cos
rounding, ~1e-6).
"""

import math

from keras import ops

from relperf_tf.layers import counter_random

SCALINGS = ("gaussian", "fixed")


def default_nb_features(dim):
    """Default number of random features m = int(d · ln d) (at least 1)."""
    return max(1, int(dim * math.log(dim))) if dim > 1 else 1


def orthogonal_random_matrix(nb_rows, nb_columns, seed, scaling="gaussian"):
    """Draws W ∈ R^(nb_rows × nb_columns) with orthogonal rows inside each block.

    Args:
        nb_rows: int, m, the number of random features.
        nb_columns: int, d, the dimension of queries and keys.
        seed: pair of int32 scalars (Python ints or tensors), the Threefry key.
        scaling: `"gaussian"` (row norms ~ χ_d) or `"fixed"` (row norms √d).

    Returns:
        float32 tensor `[nb_rows, nb_columns]`.
    """
    if scaling not in SCALINGS:
        raise ValueError(f"scaling={scaling!r} is not allowed; use one of {SCALINGS}.")
    nb_blocks = -(-nb_rows // nb_columns)
    gaussian = counter_random.normal([nb_blocks, nb_columns, nb_columns], seed, stream=0)
    q, r = ops.qr(gaussian)  # columns orthonormal
    # LAPACK fixes the sign of diag(R), which biases Q's columns (the first one
    # always points into one half-space); flipping by sign(diag R) makes Q Haar.
    q = q * ops.sign(ops.diagonal(r, axis1=-2, axis2=-1))[:, None, :]
    rows = ops.reshape(ops.transpose(q, [0, 2, 1]), [nb_blocks * nb_columns, nb_columns])
    rows = rows[:nb_rows]
    if scaling == "gaussian":
        norms = ops.norm(counter_random.normal([nb_rows, nb_columns], seed, stream=1), axis=1)
    else:
        norms = ops.full([nb_rows], math.sqrt(float(nb_columns)), dtype="float32")
    return rows * norms[:, None]
