"""Threefry-2x32 in keras.ops: the published answers, a NumPy uint32 reference, its normals."""

import numpy as np
import pytest
from keras import ops

from relperf_tf.layers import counter_random

pytestmark = pytest.mark.all_backends


def reference_threefry(key, counter):
    """Threefry-2x32-20 in NumPy uint32 (wrapping arithmetic), written from the Random123 spec."""
    with np.errstate(over="ignore"):
        k0, k1 = (np.uint32(k & 0xFFFFFFFF) for k in key)
        ks = (k0, k1, k0 ^ k1 ^ np.uint32(0x1BD11BDA))
        x = [np.asarray(counter[0], np.uint32) + ks[0], np.asarray(counter[1], np.uint32) + ks[1]]
        for i in range(20):
            r = counter_random.ROTATIONS[i % 8]
            x[0] = x[0] + x[1]
            x[1] = ((x[1] << np.uint32(r)) | (x[1] >> np.uint32(32 - r))) ^ x[0]
            if i % 4 == 3:
                s = i // 4 + 1
                x[0] = x[0] + ks[s % 3]
                x[1] = x[1] + ks[(s + 1) % 3] + np.uint32(s)
        return x


def threefry(key, counter):
    counter = [np.asarray(c, np.uint32).astype(np.int32) for c in counter]
    key = tuple(counter_random.as_int32(k) for k in key)
    return [
        ops.convert_to_numpy(w).astype(np.uint32) for w in counter_random.threefry2x32(key, counter)
    ]


@pytest.mark.parametrize(
    "key, counter, expected",
    [  # Random123's known-answer vectors for threefry2x32_20
        ((0, 0), (0, 0), (0x6B200159, 0x99BA4EFE)),
        ((0xFFFFFFFF,) * 2, (0xFFFFFFFF,) * 2, (0x1CB996FC, 0xBB002BE7)),
        ((0x13198A2E, 0x03707344), (0x243F6A88, 0x85A308D3), (0xC4923A9C, 0x483DF7A0)),
    ],
)
def test_known_answers(key, counter, expected):
    words = threefry(key, [[c] for c in counter])
    assert [int(w[0]) for w in words] == list(expected)


def test_matches_a_numpy_reference_on_random_keys_and_counters():
    rng = np.random.default_rng(0)
    for _ in range(3):
        key = tuple(int(k) for k in rng.integers(0, 2**32, 2))
        counter = rng.integers(0, 2**32, (2, 257), dtype=np.uint64).astype(np.uint32)
        for ours, theirs in zip(threefry(key, counter), reference_threefry(key, counter)):
            np.testing.assert_array_equal(ours, theirs)


def test_uniforms_lie_strictly_inside_the_unit_interval_and_are_uniform():
    u = ops.convert_to_numpy(counter_random.uniform((100_000,), (5, 7)))
    assert u.dtype == np.float32 and u.min() > 0 and u.max() < 1
    counts = np.histogram(u, bins=10, range=(0, 1))[0]
    assert np.abs(counts / 10_000 - 1).max() < 0.05


def test_normals_have_unit_moments_and_depend_on_key_and_stream():
    z = ops.convert_to_numpy(counter_random.normal((200, 500), (1, 2)))
    assert z.shape == (200, 500)
    assert abs(z.mean()) < 0.01 and abs(z.std() - 1) < 0.01 and abs((z**4).mean() - 3) < 0.1
    again = ops.convert_to_numpy(counter_random.normal((200, 500), (1, 2)))
    np.testing.assert_array_equal(z, again)
    for key, stream in (((1, 3), 0), ((2, 2), 0), ((1, 2), 1)):
        other = ops.convert_to_numpy(counter_random.normal((200, 500), key, stream))
        assert abs(np.corrcoef(z.ravel(), other.ravel())[0, 1]) < 0.02


def test_seeds_of_any_size_fold_into_32_bits():
    assert counter_random.fold_seed(7) == 7
    assert counter_random.fold_seed(2**32 + 7) == 6
    assert counter_random.fold_seed(-2) == counter_random.fold_seed(2**64 - 2) == 1
    assert counter_random.fold_seed(2**31) == -(2**31)  # the bit pattern, as int32
