"""Causal decoding one token at a time with a cache equals the full causal pass, token by
token: FAVOR+'s recurrent state (softmax, relu, the paper's `favor` positions) and the cache of
past keys and values (the exact factor, exact softmax)."""

import keras
import numpy as np
import pytest

from relperf_tf.layers import ClippedRelativeAttention, FavorAttention, RelativeFavorAttention

pytestmark = pytest.mark.all_backends

LAYERS = {
    "favor-softmax": lambda: FavorAttention(2, 4, nb_features=8, seed=1),
    "favor-relu": lambda: FavorAttention(2, 4, nb_features=8, feature_map="relu", seed=1),
    "exact-softmax": lambda: FavorAttention(2, 4, feature_map="exact", seed=1),
    "relative-favor": lambda: RelativeFavorAttention(2, 4, position_kernel="favor", seed=1),
    "relative-exact": lambda: RelativeFavorAttention(2, 4, seed=1),
    "relative-exact-softmax": lambda: RelativeFavorAttention(2, 4, feature_map="exact", seed=1),
    "gated": lambda: FavorAttention(2, 4, use_gate=True, seed=1),
}
KINDS = {
    "favor-softmax": "state",
    "favor-relu": "state",
    "relative-favor": "state",
    "gated": "state",
}


def sequence(seed=0):
    x = np.random.default_rng(seed).normal(size=(2, 11, 8)).astype("float32")
    mask = np.ones((2, 11), bool)
    mask[1, 3] = False  # a padded token in the middle
    return x, mask


@pytest.mark.parametrize("name", list(LAYERS))
def test_a_prompt_then_one_token_at_a_time_equals_the_causal_pass(name):
    x, mask = sequence()
    layer = LAYERS[name]()
    full = np.array(layer(x, x, use_causal_mask=True, query_mask=mask, value_mask=mask))
    cache = layer.initial_cache(2, max_length=11)
    expected_keys = {"state", "scale"} if KINDS.get(name) else {"key", "value", "valid"}
    assert set(cache) == expected_keys
    outputs = []
    output, cache = layer(x[:, :4], cache=cache, cache_update_index=0, query_mask=mask[:, :4])
    outputs.append(np.array(output))
    for t in range(4, 11):
        step = slice(t, t + 1)
        output, cache = layer(
            x[:, step], cache=cache, cache_update_index=t, query_mask=mask[:, step]
        )
        outputs.append(np.array(output))
    np.testing.assert_allclose(np.concatenate(outputs, axis=1)[mask], full[mask], atol=1e-5)


@pytest.mark.parametrize("name", ["favor-softmax", "relative-exact"])
def test_a_compiled_step_with_a_traced_index(name):
    """The step inside a compiled function, its position a tensor (one trace for every step)."""
    if keras.backend.backend() != "tensorflow":
        pytest.skip("a tf.function check; JAX and PyTorch trace the same ops")
    import tensorflow as tf

    x, _ = sequence(1)
    layer = LAYERS[name]()
    full = np.array(layer(x, x, use_causal_mask=True))
    step = tf.function(
        lambda token, cache, index: layer(token, cache=cache, cache_update_index=index)
    )
    cache = layer.initial_cache(2, max_length=11)
    outputs = []
    for t in range(11):
        output, cache = step(x[:, t : t + 1], cache, tf.constant(t))
        outputs.append(np.array(output))
    np.testing.assert_allclose(np.concatenate(outputs, axis=1), full, atol=1e-5)


def test_what_cannot_decode_says_why():
    x, _ = sequence()
    circular = RelativeFavorAttention(2, 4, position_kernel="circular")
    circular(x, x)
    with pytest.raises(ValueError, match="circular"):
        circular.initial_cache(2, 11)
    efficient = FavorAttention(2, 4, feature_map="efficient")
    efficient(x, x)
    with pytest.raises(ValueError, match="efficient"):
        efficient.initial_cache(2)
    clipped = ClippedRelativeAttention(2, 4, class_token=False)
    clipped(x, x)
    with pytest.raises(ValueError, match="both ways"):
        clipped(x[:, :1], cache={}, cache_update_index=0)
    exact = RelativeFavorAttention(2, 4)
    with pytest.raises(ValueError, match="built"):
        exact.initial_cache(2, 11)
    exact(x, x)
    with pytest.raises(ValueError, match="max_length"):
        exact.initial_cache(2)
    with pytest.raises(ValueError, match="cache_update_index"):
        exact(x[:, :1], cache=exact.initial_cache(2, 11))
