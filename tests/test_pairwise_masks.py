"""Pairwise attention masks that factorise, as keras-hub's blocks build them, in linear time.

keras-hub's `TransformerEncoder` passes `merge_padding_and_attention_mask`'s
output, the int32 padding mask with an axis added (`[batch, 1, T]`); its
decoder the minimum of that and a causal `[batch, T, T]` triangle. The masks
here are built the same way (not imported: keras-hub is not a dependency).
"""

import os

import keras
import numpy as np
import pytest
from keras import ops

from relperf_tf.layers import ClippedRelativeAttention, FavorAttention, RelativeFavorAttention

pytestmark = pytest.mark.all_backends

LAYERS = {
    "favor": lambda: FavorAttention(2, 4, nb_features=8, seed=1),
    "favor-exact": lambda: FavorAttention(2, 4, feature_map="exact", seed=1),
    "relative": lambda: RelativeFavorAttention(2, 4, nb_features=8, seed=1),
    "clipped": lambda: ClippedRelativeAttention(2, 4, class_token=False, seed=1, clipping_dist=2),
}
CAUSAL_LAYERS = [name for name in LAYERS if name != "clipped"]


def padded_batch(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(3, 10, 8)).astype("float32")
    padding = np.ones((3, 10), bool)
    padding[0, 7:] = padding[2, 4:] = False
    return x, padding


def encoder_mask(padding):
    """keras-hub's `merge_padding_and_attention_mask(inputs, padding_mask, None)`: `[B, 1, T]`."""
    return ops.cast(ops.expand_dims(padding, axis=1), "int32")


def decoder_mask(padding):
    """keras-hub's decoder self-attention mask: min(padding `[B, 1, T]`, causal `[B, T, T]`)."""
    length = padding.shape[1]
    causal = ops.arange(length)[:, None] >= ops.arange(length)[None, :]
    causal = ops.broadcast_to(ops.cast(causal, "int32")[None], (padding.shape[0], length, length))
    return ops.minimum(encoder_mask(padding), causal)


@pytest.mark.parametrize("name", list(LAYERS))
def test_keras_hub_encoder_mask_is_key_padding(name):
    x, padding = padded_batch()
    layer = LAYERS[name]()
    expected = np.array(layer(x, x, value_mask=padding))
    np.testing.assert_allclose(
        layer(x, x, attention_mask=encoder_mask(padding)), expected, atol=1e-6
    )
    full = padding[:, :, None] & padding[:, None, :]  # queries masked too: padded rows are 0
    out = np.array(layer(x, x, attention_mask=full))
    np.testing.assert_allclose(out[padding], expected[padding], atol=1e-6)
    assert np.abs(out[~padding]).max() == 0.0


@pytest.mark.parametrize("name", CAUSAL_LAYERS)
def test_keras_hub_decoder_mask_is_causal_padding(name):
    x, padding = padded_batch(1)
    layer = LAYERS[name]()
    expected = np.array(layer(x, x, value_mask=padding, use_causal_mask=True))
    out = np.array(layer(x, x, attention_mask=decoder_mask(padding)))
    np.testing.assert_allclose(out, expected, atol=1e-6)


def test_masks_may_differ_per_head():
    """A `[batch, heads, T, S]` mask whose heads pad different keys: each head's weights are
    those of its own mask."""
    x, padding = padded_batch(2)
    other = padding.copy()
    other[1, :3] = False
    layer = LAYERS["favor-exact"]()
    per_head = np.stack([padding[:, None, :]] * 10, axis=2)  # [B, 1, T, S]
    per_head = np.concatenate([per_head, np.stack([other[:, None, :]] * 10, axis=2)], axis=1)
    _, weights = layer(x, x, attention_mask=per_head, return_attention_scores=True)
    _, first = layer(x, x, value_mask=padding, return_attention_scores=True)
    _, second = layer(x, x, value_mask=other, return_attention_scores=True)
    np.testing.assert_allclose(np.array(weights)[:, 0], np.array(first)[:, 0], atol=1e-6)
    np.testing.assert_allclose(np.array(weights)[:, 1], np.array(second)[:, 1], atol=1e-6)


def mask_model(layer, length=10):
    x = keras.Input((length, 8))
    mask = keras.Input((length, length), dtype="int32")
    return keras.Model([x, mask], layer(x, x, attention_mask=mask))


@pytest.mark.parametrize("name", CAUSAL_LAYERS)
def test_compiled_calls_read_the_form_when_they_run(name):
    """In `predict` (a compiled function on TensorFlow and JAX) the mask's values are not known
    while tracing: padding or causal padding is chosen when it runs."""
    x, padding = padded_batch(3)
    layer = LAYERS[name]()
    model = mask_model(layer)
    for mask, causal in ((encoder_mask(padding), False), (decoder_mask(padding), True)):
        mask = np.broadcast_to(np.array(mask), (3, 10, 10)).astype("int32")
        expected = np.array(layer(x, x, value_mask=padding, use_causal_mask=causal))
        np.testing.assert_allclose(model.predict([x, mask], verbose=0), expected, atol=1e-5)


def test_a_compiled_call_never_ignores_a_mask_it_cannot_apply():
    """A mask with a hole, inside a compiled function: an error with the supported forms where
    the backend can raise while running, else NaN outputs; never the unmasked result."""
    x, _ = padded_batch(4)
    model = mask_model(LAYERS["favor"]())
    mask = np.ones((3, 10, 10), "int32")
    mask[:, 5, 2] = 0
    try:
        out = model.predict([x, mask], verbose=0)
    except Exception as error:  # TensorFlow graphs, JAX: the check raised when the graph ran
        assert "does not factorise" in str(error)
    else:  # XLA dropped the check (or the backend could not raise): the outputs say so
        assert np.isnan(out).all()


# --- a keras-hub-style encoder block -------------------------------------------------


@keras.saving.register_keras_serializable(package="relperf_tf_tests")
class EncoderBlock(keras.layers.Layer):
    """keras-hub's `TransformerEncoder` in miniature: pre-LayerNorm attention and feed-forward,
    the padding mask passed to attention as `merge_padding_and_attention_mask` gives it."""

    def __init__(self, attention, **kwargs):
        super().__init__(**kwargs)
        if isinstance(attention, dict):
            attention = keras.saving.deserialize_keras_object(attention)
        self.attention = attention
        self.norm = keras.layers.LayerNormalization()
        self.feed_forward = keras.layers.Dense(8, activation="gelu")

    def build(self, inputs_shape, padding_mask_shape=None):
        self.norm.build(inputs_shape)
        if not self.attention.built:  # a reloaded config built it already
            self.attention.build(inputs_shape, inputs_shape)
        self.feed_forward.build(inputs_shape)

    def call(self, inputs, padding_mask):
        hidden = self.norm(inputs)
        hidden = self.attention(hidden, hidden, attention_mask=encoder_mask(padding_mask))
        x = inputs + hidden
        return x + self.feed_forward(x)

    def compute_output_shape(self, inputs_shape, padding_mask_shape=None):
        return inputs_shape  # as keras-hub's blocks declare it

    def get_config(self):
        attention = keras.saving.serialize_keras_object(self.attention)
        return dict(super().get_config(), attention=attention)


@pytest.mark.parametrize("name", ["favor", "relative"])
def test_a_keras_hub_style_encoder_trains_saves_reloads_and_ignores_padding(tmp_path, name):
    ids = keras.Input((None,), dtype="int32")
    padding = keras.Input((None,), dtype="bool")
    embedded = keras.layers.Embedding(20, 8)(ids)
    block = EncoderBlock(LAYERS[name](), name="encoder")
    encoded = block(embedded, padding)
    pooled = keras.layers.GlobalAveragePooling1D()(encoded, mask=padding)
    model = keras.Model([ids, padding], keras.layers.Dense(3)(pooled))
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    rng = np.random.default_rng(5)
    tokens = rng.integers(1, 20, (16, 12))
    mask = np.ones((16, 12), bool)
    mask[::2, 9:] = False
    history = model.fit([tokens, mask], rng.integers(0, 3, 16), epochs=3, batch_size=8, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    path = os.path.join(tmp_path, "encoder.keras")
    model.save(path)
    reloaded = keras.saving.load_model(path)
    np.testing.assert_allclose(
        reloaded.predict([tokens, mask], verbose=0),
        model.predict([tokens, mask], verbose=0),
        atol=1e-6,
    )
    # Padding of any content changes nothing real (the encoder's token outputs, ≤ 1e-6).
    features = keras.Model(model.inputs, model.get_layer("encoder").output)
    short = features.predict([tokens[:, :9], np.ones((16, 9), bool)], verbose=0)
    longer = np.concatenate([tokens[:, :9], rng.integers(1, 20, (16, 5))], axis=1)
    longer_mask = np.concatenate([np.ones((16, 9), bool), np.zeros((16, 5), bool)], axis=1)
    long = features.predict([longer, longer_mask], verbose=0)
    np.testing.assert_allclose(long[:, :9], short, atol=1e-6)
