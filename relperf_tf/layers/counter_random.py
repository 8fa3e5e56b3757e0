"""Counter-based random numbers in `keras.ops`: the same bits on every backend.

`keras.random` draws with each backend's own generator (TensorFlow's Philox,
JAX's Threefry, PyTorch's), so one seed gives three different matrices. Here
the bits come from Threefry-2x32 with 20 rounds (Salmon et al., *Parallel
random numbers: as easy as 1, 2, 3*, SC 2011), written in 32-bit integer
`keras.ops` (wrapping adds, shifts, xors): bit-identical on TensorFlow, JAX
and PyTorch, eager or compiled. Normals come from them by Box–Muller, whose
log/cos may differ between backends by an ulp or so.

Values are int32 tensors that stand for uint32 bit patterns (JAX without x64
has no 64-bit integers, PyTorch few unsigned ones).
"""

import math
import random

from keras import ops

# Threefry-2x32 rotation constants and key-schedule parity (Random123).
ROTATIONS = (13, 15, 26, 6, 17, 29, 16, 24)
PARITY = 0x1BD11BDA
ROUNDS = 20


def as_int32(value):
    """A Python int's low 32 bits as the int32 with the same bit pattern."""
    value = int(value) & 0xFFFFFFFF
    return value - (1 << 32) if value >= 1 << 31 else value


def resolve_seed(seed):
    """`seed` as an int, or for None one drawn as Keras draws a layer's default seed: from
    Python's `random` (what `keras.random.SeedGenerator(None)` does), which
    `keras.utils.set_random_seed` seeds. So two layers built alike draw different values,
    and a script that sets the seed draws the same ones on every run."""
    return random.randint(1, 10**9) if seed is None else int(seed)


def fold_seed(seed):
    """A 64-bit seed (two's complement) folded into 32 bits: its high word xor its low word,
    as int32 (seeds below 2³² are unchanged)."""
    seed = int(seed) & 0xFFFFFFFFFFFFFFFF
    return as_int32((seed >> 32) ^ seed)


def _int32(x):
    return ops.cast(x, "int32")


def _logical_right_shift(x, bits):
    """x >> bits on the uint32 pattern (no sign extension)."""
    return ops.bitwise_and(ops.right_shift(x, bits), (1 << (32 - bits)) - 1)


def _rotate_left(x, bits):
    return ops.bitwise_or(ops.left_shift(x, bits), _logical_right_shift(x, 32 - bits))


def threefry2x32(key, counter):
    """Threefry-2x32-20 of `counter` under `key`.

    Args:
        key: pair (k0, k1) of int32 scalars (Python ints or tensors).
        counter: pair (c0, c1) of int32 tensors of one shape.

    Returns:
        pair of int32 tensors of the counters' shape (uint32 bit patterns).
    """
    k0, k1 = (_int32(k) for k in key)
    schedule = (k0, k1, ops.bitwise_xor(ops.bitwise_xor(k0, k1), as_int32(PARITY)))
    x0 = _int32(counter[0]) + schedule[0]
    x1 = _int32(counter[1]) + schedule[1]
    for round_index in range(ROUNDS):
        x0 = x0 + x1
        x1 = ops.bitwise_xor(_rotate_left(x1, ROTATIONS[round_index % 8]), x0)
        if round_index % 4 == 3:
            injection = round_index // 4 + 1
            x0 = x0 + schedule[injection % 3]
            x1 = x1 + schedule[(injection + 1) % 3] + injection
    return x0, x1


def uniform(shape, key, stream=0):
    """Uniform floats in (0, 1) `shape`, float32, from counters 0… of `stream` under `key`.

    Two uniforms per counter: the top 24 bits of each Threefry word, centred
    in their bin (exact in float32, never 0 or 1).
    """
    size = math.prod(shape)
    counters = ops.arange(-(-size // 2), dtype="int32")
    words = threefry2x32(key, (counters, ops.full(ops.shape(counters), stream, dtype="int32")))
    bits = ops.reshape(ops.stack(words, axis=-1), (-1,))[:size]
    values = (ops.cast(_logical_right_shift(bits, 8), "float32") + 0.5) * 2.0**-24
    return ops.reshape(values, shape)


def normal(shape, key, stream=0):
    """Standard normal floats `shape`, float32: Box–Muller on two uniform streams."""
    radius = ops.sqrt(-2.0 * ops.log(uniform(shape, key, 2 * stream)))
    angle = (2.0 * math.pi) * uniform(shape, key, 2 * stream + 1)
    return radius * ops.cos(angle)
