"""The Performer backbone: pixel tokens and their positions → features, shared by every task."""

import inspect

import keras
from keras import ops

from relperf_tf import validation
from relperf_tf.layers import ClassToken, FavorKernel, PixelEmbedding, TransformerBlock
from relperf_tf.layers.relative_attention import POSITION_KERNELS
from relperf_tf.models import position_strategies, presets
from relperf_tf.models.early_attributes import EarlyAttributes
from relperf_tf.models.layer_options import (
    check_layer_options,
    options_of,
    resolved_layer_options,
)

# Keras' own constructor arguments of a model.
KERAS_ARGUMENTS = ("name", "dtype", "trainable")


@keras.saving.register_keras_serializable(package="relperf_tf")
class PerformerBackbone(EarlyAttributes, keras.Model):
    """Tokens `[batch, N, C]` → features `[batch, N (+1), dim]`: embedding, positions, blocks.

    Each token's C values are embedded (`PixelEmbedding`), positions enter as
    `position_encoding` says (`position_strategies`), and `depth` pre-LN
    FAVOR+ `TransformerBlock`s follow. On a grid (`grid_shape=(H, W)`, N =
    H·W, row-major) positions are 2-D; without one (`grid_shape=None`) they
    are the token order, N is any length and a `padding_mask` input marks the
    real tokens. Every sublayer takes the backbone's dtype policy; positions
    and FAVOR+ normalisers stay in float32.

    Inputs: `{"pixels": [batch, N, C]}` on a grid, `{"pixels": [batch, N, C],
    "padding_mask": [batch, N] bool}` in 1-D. Output: `[batch, N, dim]`, with
    the class token first (last for `clipped`) when `class_token`.

    Args:
        channels: int, values per token (C).
        position_encoding: a name in `position_strategies.POSITION_STRATEGIES`
            (`absolute`, `none`, `relative`, `clipped`, `learned`).
        dim: int, token width.
        depth: int, number of transformer blocks.
        heads: int, attention heads; must divide dim.
        pos_scales: int, sinusoid frequencies per coordinate of the relative
            position features.
        position_kernel: how positional logits enter: `favor` (estimated with
            the content by FAVOR+, the paper), `exact` (an exact factor over
            grid offsets: equivariant for any random draw) or `circular`
            (cyclic offsets: invariant to cyclic shifts).
        locality: float, amplitude (>= 0) of the α, β that start head h
            attending around neighbour offset h (0: N(0, 1) as in the paper).
        seed: int, base seed of the FAVOR+ draws (block i uses 1000·seed + i).
        remat: bool, recompute feature maps and feed-forward activations in
            the backward pass: less memory for long sequences, about a third
            more compute.
        grid_shape: (rows, columns) of the token grid, or None for 1-D
            sequences of any length.
        max_length: int, the 1-D training length: sets the sinusoids' initial
            timescales (absolute 1000·N, relative 2·N); any length runs.
        causal: bool, causal self-attention (1-D: token t sees tokens <= t).
        class_token: bool, join a learned class token (the image task reads it).
        **kwargs: the layer options of `layer_options.LAYER_OWNERS`
            (`embedding_type`, `attn_dropout`, `ff_dropout`, `ff_multiplier`,
            `nb_features`, `feature_map`, `feature_redraw_interval`,
            `content_rel_attn`, `clipping_dist`; each defaults to its layer's
            default) and Keras' `name`, `dtype` (a dtype policy) and `trainable`.

    Example:
    >>> backbone = PerformerBackbone(1, "relative", dim=16, depth=1, heads=2,
    ...                              position_kernel="exact", grid_shape=(4, 4))
    >>> backbone({"pixels": np.zeros((2, 16, 1))}).shape
    (2, 16, 16)
    """

    def __init__(
        self,
        channels,
        position_encoding="absolute",
        dim=128,
        depth=4,
        heads=4,
        pos_scales=4,
        position_kernel="favor",
        locality=0.0,
        seed=0,
        remat=False,
        grid_shape=None,
        max_length=784,
        causal=False,
        class_token=False,
        **kwargs,
    ):
        keras_kwargs = {k: kwargs.pop(k) for k in KERAS_ARGUMENTS if k in kwargs}
        arguments = {
            name: value
            for name, value in locals().items()
            if name in inspect.signature(PerformerBackbone.__init__).parameters
            and name not in ("self", "kwargs")
        }
        options = self.check_settings(**arguments, **kwargs)
        self.channels = int(channels)
        self.position_encoding = position_encoding
        self.dim, self.depth, self.heads = int(dim), int(depth), int(heads)
        self.pos_scales = int(pos_scales)
        self.position_kernel = position_kernel
        self.locality = float(locality)
        self.seed = int(seed)
        self.remat = bool(remat)
        self.grid_shape = None if grid_shape is None else tuple(int(s) for s in grid_shape)
        self.max_length = int(max_length)
        self.causal = bool(causal)
        self.class_token = bool(class_token)
        self.layer_options = resolved_layer_options(options)
        policy = keras.dtype_policies.get(keras_kwargs.get("dtype") or keras.config.dtype_policy())
        self._policy = policy
        self.strategy = position_strategies.get(position_encoding)

        self._make_layers()

        # === Functional model ===
        inputs = self.input_specs()
        features = self.encode(**inputs)
        super().__init__(inputs=inputs, outputs=features, **keras_kwargs)
        self.dtype_policy = policy  # Keras' functional constructor leaves it at the global one

    def _make_layers(self):
        """The embedding, the strategy's position layers, the class token and the blocks."""
        self.embedding = PixelEmbedding(
            self.dim,
            name="embedding",
            **self.sublayer_options,
            **options_of(PixelEmbedding, self.layer_options),
        )
        for attribute, layer in self.strategy.layers(self).items():  # before the blocks
            setattr(self, attribute, layer)
        if not hasattr(self, "positions"):
            self.positions = None
        self.class_token_layer = None
        if self.class_token:
            self.class_token_layer = ClassToken(
                self.strategy.class_token_position, name="class_token", **self.sublayer_options
            )
        self.blocks = [
            TransformerBlock(
                self.strategy.attention(self, index, self._favor_options(index)),
                remat=self.remat,
                name=f"block_{index}",
                **self.sublayer_options,
                **options_of(TransformerBlock, self.layer_options),
            )
            for index in range(self.depth)
        ]

    # --- graph ---------------------------------------------------------------

    def input_specs(self):
        """The backbone's `keras.Input`s: `pixels`, and `padding_mask` in 1-D."""
        tokens = None if self.grid_shape is None else self.grid_shape[0] * self.grid_shape[1]
        inputs = {"pixels": keras.Input(shape=(tokens, self.channels), name="pixels")}
        if self.grid_shape is None:
            inputs["padding_mask"] = keras.Input(shape=(None,), dtype="bool", name="padding_mask")
        return inputs

    def encode(self, pixels, padding_mask=None, query_index=None):
        """Builds the backbone's graph on `pixels` `[b, N, C]` (tasks call it on their own inputs).

        Args:
            pixels: `[batch, N, C]` tensor.
            padding_mask: optional `[batch, N]` bool, True = a real token (1-D).
            query_index: optional int, the last block computes only that
                token's output (`[batch, 1, dim]`): a classifier reading the
                class token needs nothing else.

        Returns:
            `[batch, N (+1), dim]` features (`[batch, 1, dim]` with query_index).
        """
        x, positions = self.embed(pixels)
        extra = {}
        if padding_mask is not None:
            extra["mask"] = padding_mask
        if self.causal:
            extra["use_causal_mask"] = True
        for index, block in enumerate(self.blocks):
            last = index == self.depth - 1 and query_index is not None
            x = block(x, positions, query_index=query_index if last else None, **extra)
        return x

    def embed(self, pixels):
        """The first block's input: `pixels` `[batch, N, C]` → (tokens `[batch, N (+1), dim]`,
        the positions the blocks take), i.e. embedding, position strategy, class token."""
        x = self.embedding(ops.expand_dims(pixels, 2))  # [b, N, dim]: one pixel per token
        x, positions = self.strategy.apply(self, x)
        if self.class_token_layer is not None:
            x = self.class_token_layer(x)
        return x, positions

    def class_token_index(self):
        """Where the class token sits in the features (0 or -1); None without one."""
        return None if self.class_token_layer is None else self.class_token_layer.index()

    @property
    def sublayer_options(self):
        """What every sublayer takes: the backbone's dtype policy."""
        return dict(dtype=self._policy)

    def _favor_options(self, index):
        """What block `index`'s attention takes: FAVOR+ options, seed 1000·seed + index, remat."""
        return dict(
            options_of(FavorKernel, self.layer_options),
            seed=self.seed * 1000 + index,
            remat=self.remat,
            name="attention",
            **self.sublayer_options,
        )

    # --- settings ------------------------------------------------------------

    @classmethod
    def check_settings(cls, **arguments):
        """Checks every rule of the backbone and of its layers' options, building nothing.

        Takes the constructor's arguments (unset ones at their defaults);
        returns the layer options among them (legacy `kernel`/`no_projection`
        turned into `feature_map`). Raises `validation.InvalidSetting` naming
        the argument, its value and what is allowed.
        """
        bound = inspect.signature(cls.__init__).bind_partial(None, **arguments)
        bound.apply_defaults()
        values = dict(bound.arguments)
        values.pop("self")
        extra = {k: v for k, v in values.pop("kwargs").items() if k not in KERAS_ARGUMENTS}
        strategy = position_strategies.get(values["position_encoding"])
        for name in ("channels", "dim", "depth", "heads", "pos_scales", "max_length"):
            validation.check_int(name, values[name], 1)
        validation.check_choice("position_kernel", values["position_kernel"], POSITION_KERNELS)
        validation.check_number(
            "locality", values["locality"], 0.0, hint=" (0: the paper's N(0, 1) init)"
        )
        for name in ("remat", "causal", "class_token"):
            validation.check_choice(name, values[name], (False, True))
        grid_shape = values["grid_shape"]
        if grid_shape is not None and (
            len(tuple(grid_shape)) != 2 or any(int(s) < 1 for s in grid_shape)
        ):
            raise validation.InvalidSetting(
                f"grid_shape={grid_shape} is not allowed; use (rows, columns) >= 1, or None "
                "for 1-D sequences.",
                ["grid_shape"],
            )
        if values["causal"] and grid_shape is not None:
            raise validation.InvalidSetting(
                "causal=True is not allowed with a grid_shape (the 2-D factor has no causal "
                "order); use grid_shape=None.",
                ["causal"],
            )
        if values["dim"] % values["heads"]:
            raise validation.InvalidSetting(
                f"dim={values['dim']} is not divisible by heads={values['heads']}; choose heads "
                "that divide dim.",
                ["dim", "heads"],
            )
        options = check_layer_options(
            extra, allowed_extra=set(values) - {"channels", "position_encoding"}
        )
        if values["causal"] and options.get("feature_map") == "efficient":
            raise validation.InvalidSetting(
                "causal=True is not allowed with feature_map='efficient' (keys normalised over "
                "all tokens); use softmax, relu or exact.",
                ["causal", "feature_map"],
            )
        PixelEmbedding.check_width(values["dim"], values["channels"], options.get("embedding_type"))
        strategy.check(dict(values, **options))
        return options

    @classmethod
    def from_preset(cls, preset, **kwargs):
        """The backbone of a shipped model (`presets.PRESETS`) or of a preset path."""
        return presets.load(preset, cls, **kwargs)

    # --- Keras ---------------------------------------------------------------

    def get_config(self):
        return dict(
            name=self.name,
            trainable=self.trainable,
            dtype=keras.dtype_policies.serialize(self._policy),
            **{name: getattr(self, name) for name in constructor_arguments(type(self))},
            **self.layer_options,
        )

    @classmethod
    def from_config(cls, config, custom_objects=None):
        return cls(**config)


def constructor_arguments(cls):
    """The named (positional-or-keyword) arguments of `cls.__init__`, without `self`."""
    return [
        name
        for name, parameter in inspect.signature(cls.__init__).parameters.items()
        if name != "self" and parameter.kind is parameter.POSITIONAL_OR_KEYWORD
    ]
