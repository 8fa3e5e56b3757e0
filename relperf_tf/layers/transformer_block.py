"""The pre-LayerNorm transformer block shared by all four models."""

import keras

from relperf_tf import validation
from relperf_tf.layers.dropout import Dropout
from relperf_tf.layers.favor_attention import get_keras_mask, select_token


@keras.saving.register_keras_serializable(package="relperf_tf")
class TransformerBlock(keras.layers.Layer):
    """x + Dropout(Attention(LN(x))), then x + FF(LN(x)).

    FF = Dense(4·dim, GELU), Dropout, Dense(dim). The attention layer decides
    how positions enter: it is called with `positions` (and `grid_shape`)
    when they are given. Masks pass through: the token mask (the inputs'
    Keras mask or `mask`) is the attention's query and key mask, and the
    output keeps it.

    Args:
        attention: a self-attention layer (`FavorAttention` or a subclass, or
            any layer with `keras.layers.MultiHeadAttention`'s call).
        attn_dropout: float, dropout rate in [0, 1) on the attention output.
        ff_dropout: float, dropout rate in [0, 1) inside the feed-forward.
        ff_multiplier: int, hidden width of the feed-forward over dim.
        remat: bool, recompute the feed-forward activations (`[batch, tokens,
            ff_multiplier·dim]`) in the backward pass instead of keeping them.
            With ff_dropout > 0 only LN → Dense+GELU is recomputed (a
            recomputed dropout would draw a different mask).

    Call arguments:
        inputs: `[batch, tokens, dim]`.
        positions: optional positional encodings passed to the attention.
        mask: optional `[batch, tokens]` bool, the real tokens (default: the
            inputs' Keras mask).
        use_causal_mask: bool, causal self-attention.
        grid_shape: optional (H, W) passed to the attention (2-D positions).
        training: bool.
        query_index: optional int: compute only that token's output (its
            attention over all tokens, then its feed-forward), `[batch, 1,
            dim]`; the last block of a classifier that reads one token needs
            nothing else.

    Returns:
        `[batch, tokens, dim]` (`[batch, 1, dim]` with `query_index`).
    """

    # The constructor arguments a model passes through from its own options.
    OPTIONS = ("attn_dropout", "ff_dropout", "ff_multiplier")

    def __init__(
        self, attention, attn_dropout=0.1, ff_dropout=0.1, ff_multiplier=4, remat=False, **kwargs
    ):
        super().__init__(**kwargs)
        self.supports_masking = True
        if isinstance(attention, dict):
            attention = keras.saving.deserialize_keras_object(attention)
        self.check_options(
            attn_dropout=attn_dropout, ff_dropout=ff_dropout, ff_multiplier=ff_multiplier
        )
        self.attention = attention
        self.attn_dropout = float(attn_dropout)
        self.ff_dropout = float(ff_dropout)
        self.ff_multiplier = int(ff_multiplier)
        self.remat = bool(remat)

    @staticmethod
    def check_options(**options):
        for name in ("attn_dropout", "ff_dropout"):
            if name in options:
                validation.check_number(name, options[name], 0.0, 1.0)
        if "ff_multiplier" in options:
            validation.check_int("ff_multiplier", options["ff_multiplier"], 1)

    def build(self, inputs_shape, positions_shape=None):
        dim = int(inputs_shape[-1])
        policy = dict(dtype=self.dtype_policy)
        self._attention_norm = keras.layers.LayerNormalization(
            epsilon=1e-5, name="attention_norm", **policy
        )
        self._attention_dropout = Dropout(self.attn_dropout, **policy)
        self._ff_norm = keras.layers.LayerNormalization(epsilon=1e-5, name="ff_norm", **policy)
        self._ff_hidden = keras.layers.Dense(
            self.ff_multiplier * dim, activation="gelu", name="ff_hidden", **policy
        )
        self._ff_dropout = Dropout(self.ff_dropout, **policy)
        self._ff_output = keras.layers.Dense(dim, name="ff_output", **policy)
        self._attention_norm.build(inputs_shape)
        self._ff_norm.build(inputs_shape)
        self._ff_hidden.build(inputs_shape)
        self._ff_output.build(tuple(inputs_shape[:-1]) + (self.ff_multiplier * dim,))
        if self.attention.built:  # e.g. a reloaded file built it from its own config
            return
        if positions_shape is None:
            self.attention.build(inputs_shape, inputs_shape)
        else:
            self.attention.build(inputs_shape, inputs_shape, positions_shape=positions_shape)

    def call(
        self,
        inputs,
        positions=None,
        mask=None,
        use_causal_mask=False,
        grid_shape=None,
        training=None,
        query_index=None,
    ):
        if mask is None:
            mask = get_keras_mask(inputs)
        hidden = self._attention_norm(inputs)
        extra = {} if query_index is None else dict(query_index=query_index)
        if positions is not None:
            extra["positions"] = positions
        if grid_shape is not None:
            extra["grid_shape"] = grid_shape
        if use_causal_mask:
            extra["use_causal_mask"] = True
        hidden = self.attention(
            hidden, hidden, query_mask=mask, value_mask=mask, training=training, **extra
        )
        residual = inputs if query_index is None else select_token(inputs, query_index)
        x = residual + self._attention_dropout(hidden, training=training)
        return x + self._feed_forward(x, training)

    def attention_scores(self, inputs, positions=None, mask=None, use_causal_mask=False):
        """The weights the block's attention applies to its (normalised) inputs, `[batch, heads,
        tokens, tokens]` (rows sum to 1); quadratic in tokens: for inspection."""
        hidden = self._attention_norm(inputs)
        extra = {} if positions is None else dict(positions=positions)
        if use_causal_mask:
            extra["use_causal_mask"] = True
        _, scores = self.attention(
            hidden, hidden, query_mask=mask, value_mask=mask, return_attention_scores=True, **extra
        )
        return scores

    def _ff_expand(self, x):
        return self._ff_hidden(self._ff_norm(x))

    def _ff_deterministic(self, x):
        return self._ff_output(self._ff_expand(x))

    def _feed_forward(self, x, training):
        if not (self.remat and training):
            return self._ff_output(self._ff_dropout(self._ff_expand(x), training=training))
        if self.ff_dropout == 0.0:
            return keras.remat(self._ff_deterministic)(x)
        hidden = keras.remat(self._ff_expand)(x)
        return self._ff_output(self._ff_dropout(hidden, training=training))

    def compute_output_spec(self, inputs, positions=None, *args, query_index=None, **kwargs):
        shape = (
            tuple(inputs.shape) if query_index is None else (inputs.shape[0], 1, inputs.shape[2])
        )
        return keras.KerasTensor(shape, dtype=self.compute_dtype)

    def get_config(self):
        config = super().get_config()
        config.update(
            attention=keras.saving.serialize_keras_object(self.attention),
            attn_dropout=self.attn_dropout,
            ff_dropout=self.ff_dropout,
            ff_multiplier=self.ff_multiplier,
            remat=self.remat,
        )
        return config
