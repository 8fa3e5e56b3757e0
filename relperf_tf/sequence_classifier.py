"""Sequence classifier: the four Performers over 1-D token sequences of any length.

Tokens `[batch, N, C]` (e.g. an image's pixels in raster order: sequential
Fashion-MNIST, N = 784) with a `padding_mask` `[batch, N]`, positions from the
token order, optionally causal; the masked mean of the last block's tokens
feeds a Dense head. How positions enter is the same choice as the image
models' (`models.POSITION_ENCODINGS`):

| model                    | positions                                                |
|--------------------------|----------------------------------------------------------|
| Performer                | learnable sinusoids of the token index, added            |
| NoposPerformer           | none                                                     |
| RelativePerformer        | strategy 1 in 1-D (`RelativeFavorAttention`, own ω per block): |
|                          | `favor`, `exact` (Toeplitz factor) or `circular`          |
| ClippedRelativePerformer | clipped distances on one row (bidirectional only)        |

With `position_kernel="exact"` and a padding mask, a sequence placed at any
offset of a longer padded canvas gives the same logits (fixed-draw
equivariance, `shift.canvas_shift_curve`), and a model trained at one length
runs at any other with the same weights.
"""

import keras
import numpy as np
from keras import ops

from relperf_tf import settings
from relperf_tf.direct_steps import DirectXlaSteps
from relperf_tf.layers import (
    ClippedRelativeAttention,
    FavorAttention,
    LearnableSinusoidEncoding,
    RelativeFavorAttention,
)
from relperf_tf.layers.locality_prior import initial_frequencies
from relperf_tf.layers.token_positions import TokenPositions
from relperf_tf.models import (
    MODEL_NAMES,
    POSITION_ENCODINGS,
    PerformerClassifier,
    attention_options,
    embedding_and_blocks,
    model_config,
    options_of,
    resolved_layer_options,
)


def sequence_rotations(num_heads, frequencies, amplitude):
    """A 1-D locality prior: head h starts attending around offset δ_h = 1, −1, 2, −2, …

    α_s = A cos ω_sδ, β_s = A sin ω_sδ, so that P(Δ) = A Σ_s cos ω_s(Δ − δ) peaks at Δ = δ
    (see `locality_prior`). Returns float32 `[heads, S]` each.
    """
    offsets = [(h // 2 + 1) * (1 if h % 2 == 0 else -1) for h in range(num_heads)]
    angles = np.outer(offsets, np.asarray(frequencies, "float64"))
    return (amplitude * np.cos(angles)).astype("float32"), (amplitude * np.sin(angles)).astype(
        "float32"
    )


@keras.saving.register_keras_serializable(package="relperf_tf")
class SequenceClassifier(DirectXlaSteps, keras.Model):
    """Token sequences → logits: embedding, 1-D positions, `TransformerBlock`s, masked mean.

    Inputs `{"pixels": [batch, N, C], "padding_mask": [batch, N] bool}` (N
    any length; True = a real token) → logits `[batch, num_classes]`.

    Args:
        channels: int, values per token (C).
        num_classes: int, number of logits.
        position_encoding: `absolute`, `none`, `relative` or `clipped`.
        max_length: int, the training length: sets the sinusoids' initial
            timescales (absolute 1000·N, relative 2·N); any length runs.
        causal: bool, causal self-attention (token t sees tokens <= t); the
            head still pools every real token's output.
        dim, depth, heads, pos_scales, position_kernel, locality, seed,
            remat: as `PerformerClassifier` (locality: head h starts around
            offset 1, −1, 2, −2, …).
        **kwargs: the layer options of `models.LAYER_OWNERS` and Keras'
            `name`, `dtype`, `trainable`.

    Example:
    >>> model = SequenceClassifier(1, 10, "relative", max_length=784, dim=16, depth=1,
    ...                            heads=2, position_kernel="exact", causal=True)
    >>> model({"pixels": np.zeros((2, 100, 1)), "padding_mask": np.ones((2, 100), bool)}).shape
    (2, 10)
    """

    def __init__(
        self,
        channels,
        num_classes,
        position_encoding="absolute",
        max_length=784,
        causal=False,
        dim=128,
        depth=4,
        heads=4,
        pos_scales=4,
        position_kernel="favor",
        locality=0.0,
        seed=0,
        remat=False,
        **kwargs,
    ):
        keras_kwargs = {k: kwargs.pop(k) for k in ("name", "dtype", "trainable") if k in kwargs}
        options = self.check_settings(
            channels=channels,
            num_classes=num_classes,
            position_encoding=position_encoding,
            max_length=max_length,
            causal=causal,
            dim=dim,
            depth=depth,
            heads=heads,
            pos_scales=pos_scales,
            position_kernel=position_kernel,
            locality=locality,
            seed=seed,
            remat=remat,
            **kwargs,
        )
        self.channels, self.num_classes = int(channels), int(num_classes)
        self.position_encoding = position_encoding
        self.max_length, self.causal = int(max_length), bool(causal)
        self.dim, self.depth, self.heads = int(dim), int(depth), int(heads)
        self.pos_scales, self.position_kernel = int(pos_scales), position_kernel
        self.locality, self.seed, self.remat = float(locality), int(seed), bool(remat)
        self.layer_options = resolved_layer_options(options)
        policy = keras.dtype_policies.get(keras_kwargs.get("dtype") or keras.config.dtype_policy())
        self._sublayer = dict(dtype=policy)

        # === Layers ===
        self.embedding, self.blocks = embedding_and_blocks(self)
        self.positions = None
        if position_encoding == "absolute":
            self.positions = LearnableSinusoidEncoding(
                self.dim // 2,
                1000.0 * self.max_length,
                name="positions",
                dtype=policy.variable_dtype,
            )
        self.pool = keras.layers.GlobalAveragePooling1D(name="pool", **self._sublayer)
        self.head = keras.layers.Dense(self.num_classes, name="head", **self._sublayer)

        # === Functional model ===
        pixels = keras.Input(shape=(None, self.channels), name="pixels")
        padding_mask = keras.Input(shape=(None,), dtype="bool", name="padding_mask")
        x = self.embedding(ops.expand_dims(pixels, 2))  # [b, N, dim]: one pixel per token
        if self.positions is not None:
            encodings = self.positions(TokenPositions(name="token_positions")(x))  # [N, dim]
            x = x + ops.expand_dims(ops.cast(encodings, x.dtype), 0)
        for block in self.blocks:
            x = block(x, mask=padding_mask, use_causal_mask=self.causal)
        logits = ops.cast(self.head(self.pool(x, mask=padding_mask)), "float32")
        super().__init__(
            inputs={"pixels": pixels, "padding_mask": padding_mask}, outputs=logits, **keras_kwargs
        )
        self.dtype_policy = policy

    @classmethod
    def check_settings(cls, **arguments):
        """The image models' rules on a 1×N grid, and the sequence's own (one InvalidSetting)."""
        arguments = dict(arguments)
        channels, max_length = arguments.pop("channels"), arguments.pop("max_length", 784)
        causal = arguments.pop("causal", False)
        settings.check_int("max_length", max_length, 1)
        settings.check_choice("causal", causal, (False, True))
        if causal and arguments["position_encoding"] == "clipped":
            raise settings.InvalidSetting(
                "causal=True is not allowed for ClippedRelativePerformer (its windows look both "
                "ways); use another model or causal=False.",
                ["causal"],
            )
        if causal and arguments.get("feature_map") == "efficient":
            raise settings.InvalidSetting(
                "causal=True is not allowed with feature_map='efficient' (keys normalised over "
                "all tokens); use softmax, relu or exact.",
                ["causal", "feature_map"],
            )
        return PerformerClassifier.check_settings(
            image_shape=(1, max_length, channels), **arguments
        )

    def _attention(self, index):
        favor = attention_options(self, index)
        if self.position_encoding == "relative":
            rotations = {}
            if self.locality:
                frequencies = initial_frequencies(self.pos_scales, 2.0 * self.max_length)
                alpha, beta = sequence_rotations(self.heads, frequencies, self.locality)
                rotations = dict(
                    alpha_initializer=keras.initializers.Constant(alpha),
                    beta_initializer=keras.initializers.Constant(beta),
                )
            return RelativeFavorAttention(
                self.heads,
                position_kernel=self.position_kernel,
                pos_scales=self.pos_scales,
                max_timescale=2.0 * self.max_length,
                **options_of(RelativeFavorAttention, self.layer_options),
                **rotations,
                **favor,
            )
        if self.position_encoding == "clipped":
            return ClippedRelativeAttention(
                self.heads,
                class_token=False,
                **options_of(ClippedRelativeAttention, self.layer_options),
                **favor,
            )
        return FavorAttention(self.heads, **favor)

    def get_config(self):
        return model_config(self)

    @classmethod
    def from_config(cls, config, custom_objects=None):
        return cls(**config)


SequenceClassifier.SETTINGS = settings.describe(SequenceClassifier, ("causal",))


def _sequence_hparams(name, hparams):
    settings.check_choice("model", name, MODEL_NAMES)
    hparams = {k: v for k, v in hparams.items() if v is not None or k == "nb_features"}
    hparams.pop("margin", None)  # an image setting
    return hparams


def check_sequence_hparams(name, *, channels, num_classes, max_length, **hparams):
    """Checks a sequence model's settings without building it (InvalidSetting)."""
    hparams = _sequence_hparams(name, hparams)
    hparams.pop("dtype", None)
    hparams.pop("seed", None)
    return SequenceClassifier.check_settings(
        channels=channels,
        num_classes=num_classes,
        position_encoding=POSITION_ENCODINGS[name],
        max_length=max_length,
        **hparams,
    )


def build_sequence_model(name, *, channels, num_classes, max_length, **hparams):
    """Builds one of `models.MODEL_NAMES` as a `SequenceClassifier` (built, not compiled).

    Args:
        name: one of `MODEL_NAMES`.
        channels: int, values per token.
        num_classes: int, number of logits.
        max_length: int, the training sequence length (any length runs).
        **hparams: any of `MODEL_SETTINGS` and `SequenceClassifier.SETTINGS`
            (None: its default), `seed`, and Keras' `dtype`.
    """
    hparams = _sequence_hparams(name, hparams)
    return SequenceClassifier(
        channels=channels,
        num_classes=num_classes,
        position_encoding=POSITION_ENCODINGS[name],
        max_length=max_length,
        name=name,
        **hparams,
    )
