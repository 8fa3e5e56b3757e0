"""The model factory: four Performers that differ only in how positions enter.

All four share one pixel-embedding path, one `TransformerBlock` stack and one
classifier head; `position_encoding` selects the strategy:

| model                    | position_encoding | attention                   |
|--------------------------|-------------------|-----------------------------|
| Performer                | absolute          | FavorAttention              |
| NoposPerformer           | none              | FavorAttention              |
| RelativePerformer        | relative          | RelativeFavorAttention      |
| ClippedRelativePerformer | clipped           | ClippedRelativeAttention    |
"""

import inspect
import warnings

import keras
from keras import ops

from relperf_tf import settings
from relperf_tf.direct_steps import DirectXlaSteps
from relperf_tf.layers import (
    ClassToken,
    ClippedRelativeAttention,
    FavorAttention,
    FavorKernel,
    LearnableSinusoidEncoding,
    PixelEmbedding,
    RelativeFavorAttention,
    TransformerBlock,
)
from relperf_tf.layers.favor_kernel import upgrade_legacy_options
from relperf_tf.layers.grid_positions import GridPositions
from relperf_tf.layers.locality_prior import initial_frequencies, local_rotations
from relperf_tf.layers.relative_attention import POSITION_KERNELS

# With an exact positional factor, the last block's class-token query has
# factor 1 with every token: its α, β are not used, and Keras' optimizer would
# warn about their missing gradients on every `fit`.
warnings.filterwarnings(
    "ignore",
    message=r"Gradients do not exist for variables \[('[^']*/attention/(alpha|beta)'(, )?)+\]",
)

MODEL_NAMES = ("Performer", "NoposPerformer", "RelativePerformer", "ClippedRelativePerformer")
POSITION_ENCODINGS = {
    "Performer": "absolute",
    "NoposPerformer": "none",
    "RelativePerformer": "relative",
    "ClippedRelativePerformer": "clipped",
}
# The layers whose options a model passes through (each owns its `SETTINGS`).
LAYER_OWNERS = (
    PixelEmbedding,
    TransformerBlock,
    FavorKernel,
    RelativeFavorAttention,
    ClippedRelativeAttention,
)
# Keras' own constructor arguments of a model.
_KERAS_ARGUMENTS = ("name", "dtype", "trainable")


def display_name(model_name, position_kernel="favor"):
    """How results name a model: RelativePerformer's exact paths are named apart."""
    if model_name == "RelativePerformer" and position_kernel not in (None, "favor"):
        return f"{model_name} ({position_kernel})"
    return model_name


def options_of(owner, options):
    """The entries of `options` that `owner`'s `SETTINGS` name."""
    return {s.name: options[s.name] for s in owner.SETTINGS if s.name in options}


@keras.saving.register_keras_serializable(package="relperf_tf")
class PerformerClassifier(DirectXlaSteps, keras.Model):
    """Image classifier: pixels as tokens, class token, FAVOR+ blocks, linear head.

    Images `[batch, H, W, C]` → logits `[batch, num_classes]`, built
    functionally (`keras.Model(images, logits)`) from one embedding path, a
    stack of `TransformerBlock`s and a Dense head; `position_encoding` is the
    one choice between the four models (module docstring). Every sublayer
    takes the model's dtype policy: under `mixed_bfloat16` the Dense layers
    compute in bf16, FAVOR+ feature maps and normalisers in float32.

    Args:
        image_shape: (height, width, channels) of the input images.
        num_classes: int, number of logits.
        position_encoding: `absolute`, `none`, `relative` or `clipped`.
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
        margin: int, pixels (>= 0) of background (zeros after preprocessing)
            added around each image inside the model.
        seed: int, base seed of the FAVOR+ draws (block i uses 1000·seed + i).
        remat: bool, recompute feature maps and feed-forward activations in
            the backward pass: less memory for long sequences, about a third
            more compute.
        **kwargs: options of the layers in `LAYER_OWNERS` (`embedding_type`,
            `attn_dropout`, `ff_dropout`, `nb_features`, `feature_map`,
            `feature_redraw_interval`, `content_rel_attn`, `clipping_dist`;
            each defaults to its layer's default), and Keras' `name`, `dtype`
            (a dtype policy, e.g. `"mixed_bfloat16"`) and `trainable`.
    """

    def __init__(
        self,
        image_shape,
        num_classes,
        position_encoding="absolute",
        dim=128,
        depth=4,
        heads=4,
        pos_scales=4,
        position_kernel="favor",
        locality=0.0,
        margin=0,
        seed=0,
        remat=False,
        **kwargs,
    ):
        keras_kwargs = {k: kwargs.pop(k) for k in _KERAS_ARGUMENTS if k in kwargs}
        arguments = dict(
            image_shape=image_shape,
            num_classes=num_classes,
            position_encoding=position_encoding,
            dim=dim,
            depth=depth,
            heads=heads,
            pos_scales=pos_scales,
            position_kernel=position_kernel,
            locality=locality,
            margin=margin,
            seed=seed,
            remat=remat,
        )
        checked = self.check_settings(**arguments, **kwargs)
        self.image_shape = tuple(int(s) for s in image_shape)
        self.num_classes = int(num_classes)
        self.position_encoding = position_encoding
        self.dim, self.depth, self.heads = int(dim), int(depth), int(heads)
        self.pos_scales = int(pos_scales)
        self.position_kernel = position_kernel
        self.locality = float(locality)
        self.margin = int(margin)
        self.seed = int(seed)
        self.remat = bool(remat)
        self.layer_options = resolved_layer_options(checked)
        policy = keras.dtype_policies.get(keras_kwargs.get("dtype") or keras.config.dtype_policy())
        self._sublayer = dict(dtype=policy)

        # === Layers ===
        self.positions = self._make_positions()  # before the blocks: the locality prior reads it
        self.embedding, self.blocks = embedding_and_blocks(self)
        self.class_token = ClassToken(
            "last" if position_encoding == "clipped" else "first",
            name="class_token",
            **self._sublayer,
        )
        self.head = keras.layers.Dense(self.num_classes, name="head", **self._sublayer)

        # === Functional model ===
        images = keras.Input(shape=self.image_shape, name="images")
        x = images
        if self.margin:
            # Background (zero after preprocessing) around the image: the frame moves away.
            pad = (0, 0), (self.margin, self.margin), (self.margin, self.margin), (0, 0)
            x = ops.pad(x, pad)
        tokens, positions = self._add_positions(self.embedding(x))  # [b, H·W, dim] of the grid
        x = self.class_token(tokens)
        for block in self.blocks[:-1]:
            x = block(x, positions)
        # The head reads the class token only: the last block computes nothing else.
        x = self.blocks[-1](x, positions, query_index=self.class_token.index())
        # Logits in float32 whatever the policy (the loss and exports read them).
        logits = ops.cast(self.head(x[:, 0]), "float32")
        super().__init__(inputs=images, outputs=logits, **keras_kwargs)
        self.dtype_policy = policy  # Keras' functional constructor leaves it at the global one

    @classmethod
    def check_settings(cls, **arguments):
        """Checks every rule of the model and of its layers' options, building nothing.

        Takes the constructor's arguments (unset ones at their defaults);
        returns the layer options among them (legacy `kernel`/`no_projection`
        turned into `feature_map`). Raises `settings.InvalidSetting` naming
        the parameter, its value and what is allowed.
        """
        bound = inspect.signature(cls.__init__).bind_partial(None, **arguments)
        bound.apply_defaults()
        values = dict(bound.arguments)
        options = upgrade_legacy_options(
            {k: v for k, v in values.pop("kwargs").items() if k not in _KERAS_ARGUMENTS}
        )
        known = {s.name for owner in LAYER_OWNERS for s in owner.SETTINGS}
        unknown = sorted(set(options) - known)
        if unknown:
            allowed = sorted(
                known | set(values) - {"self", "image_shape", "num_classes", "position_encoding"}
            )
            raise settings.InvalidSetting(f"unknown hyperparameters {unknown}; allowed: {allowed}.")
        encoding = values["position_encoding"]
        settings.check_choice("position_encoding", encoding, tuple(POSITION_ENCODINGS.values()))
        image_shape = tuple(values["image_shape"])
        if len(image_shape) != 3:
            raise settings.InvalidSetting(
                f"image_shape={image_shape} is not allowed; use (height, width, channels) "
                "for images of rank 4 [batch, H, W, C].",
                ["image_shape"],
            )
        for name in ("dim", "depth", "heads", "pos_scales", "num_classes"):
            settings.check_int(name, values[name], 1)
        settings.check_int("margin", values["margin"], 0)
        settings.check_choice("position_kernel", values["position_kernel"], POSITION_KERNELS)
        settings.check_number(
            "locality", values["locality"], 0.0, hint=" (0: the paper's N(0, 1) init)"
        )
        dim, heads = values["dim"], values["heads"]
        FavorAttention.check_heads(dim, heads)
        if encoding == "absolute" and dim % 4:
            raise settings.InvalidSetting(
                f"dim={dim} is not allowed for Performer; use a multiple of 4.", ["dim"]
            )
        if encoding == "clipped":
            ClippedRelativeAttention.check_heads_even(heads)
        for owner in LAYER_OWNERS:
            owner.check_options(**options_of(owner, options))
        PixelEmbedding.check_width(dim, image_shape[2], options.get("embedding_type"))
        if encoding == "relative":
            RelativeFavorAttention.check_kernel(
                values["position_kernel"], options.get("content_rel_attn", False)
            )
        return options

    # --- the one place the four models differ: how positions enter ---------

    def _make_positions(self):
        """The learnable sinusoid encoding of absolute or relative positions, or None.

        It computes in float32 under any policy: in bf16, ω·p for p up to the
        grid size would carry phase errors of a tenth of a radian.
        """
        size = max(self.grid_shape)
        float32 = self._sublayer["dtype"].variable_dtype
        if self.position_encoding == "absolute":
            return LearnableSinusoidEncoding(
                self.dim // 4, 1000.0 * size, name="positions", dtype=float32
            )
        if self.position_encoding == "relative":
            return LearnableSinusoidEncoding(
                self.pos_scales, 2.0 * size, name="positions", dtype=float32
            )
        return None

    def _add_positions(self, tokens):
        """(tokens, positions for the blocks): absolute encodings join the tokens,
        relative ones go to every attention layer (per token, or per row/column offset)."""
        if self.position_encoding == "absolute":
            encodings = self.positions(
                GridPositions(self.grid_shape, name="grid_coordinates")(tokens)
            )
            return tokens + ops.expand_dims(ops.cast(encodings, tokens.dtype), 0), None
        if self.position_encoding != "relative":
            return tokens, None
        if self._grid_positions():
            circular = self.position_kernel == "circular"
            return tokens, [
                self.positions(GridPositions(self.grid_shape, kind, circular, name=kind)(tokens))
                for kind in ("row_offsets", "col_offsets")
            ]
        encodings = self.positions(GridPositions(self.grid_shape, name="grid_coordinates")(tokens))
        return tokens, ops.pad(
            encodings, ((1, 0), (0, 0))
        )  # [H·W + 1, 4S]: class token first, zeros

    def _attention(self, index):
        """The attention layer of block `index`."""
        favor = attention_options(self, index)
        if self.position_encoding == "relative":
            return RelativeFavorAttention(
                self.heads,
                position_kernel=self.position_kernel,
                **options_of(RelativeFavorAttention, self.layer_options),
                **self._rotation_initializers(),
                **favor,
            )
        if self.position_encoding == "clipped":
            return ClippedRelativeAttention(
                self.heads,
                grid_shape=self.grid_shape,
                **options_of(ClippedRelativeAttention, self.layer_options),
                **favor,
            )
        return FavorAttention(self.heads, **favor)

    def _grid_positions(self):
        """Whether attention takes the encodings of row and column offsets (exact factor)."""
        return self.position_encoding == "relative" and self.position_kernel != "favor"

    def _rotation_initializers(self):
        """α, β initializers of the relative attention: N(0, 1), or the locality prior."""
        if not self.locality:
            return {}
        frequencies = initial_frequencies(self.pos_scales, self.positions.max_timescale)
        alpha, beta = local_rotations(self.heads, frequencies, self.locality)
        return dict(
            alpha_initializer=keras.initializers.Constant(alpha),
            beta_initializer=keras.initializers.Constant(beta),
        )

    # --- Keras ---------------------------------------------------------------

    @property
    def grid_shape(self):
        """(rows, columns) of the token grid: the image and its margin."""
        return tuple(size + 2 * self.margin for size in self.image_shape[:2])

    def call(self, inputs, training=None, mask=None):
        shape = tuple(inputs.shape)
        if len(shape) != 4:
            raise ValueError(f"images of rank {len(shape)} are not allowed; use [batch, H, W, C].")
        if shape[1:] != self.image_shape:
            raise ValueError(
                f"images of shape {shape[1:]} are not allowed; this model takes {self.image_shape}."
            )
        return super().call(inputs, training=training, mask=mask)

    def get_config(self):
        return model_config(self)

    @classmethod
    def from_config(cls, config, custom_objects=None):
        return cls(**config)


def resolved_layer_options(checked):
    """Every layer option of `LAYER_OWNERS`, at its layer's default unless `checked` gives it."""
    return {
        s.name: checked.get(s.name, s.default) for owner in LAYER_OWNERS for s in owner.SETTINGS
    }


def attention_options(model, index):
    """What every attention layer of block `index` takes: the FAVOR+ options, the block's seed
    (1000·seed + index), remat, its name and the task's dtype policy."""
    return dict(
        options_of(FavorKernel, model.layer_options),
        seed=model.seed * 1000 + index,
        remat=model.remat,
        name="attention",
        **model._sublayer,
    )


def embedding_and_blocks(model):
    """The pixel embedding and the `TransformerBlock` stack a task shares: built from the
    task's `dim`, `depth`, `remat`, dtype policy, `layer_options` and `_attention(index)`."""
    embedding = PixelEmbedding(
        model.dim,
        name="embedding",
        **model._sublayer,
        **options_of(PixelEmbedding, model.layer_options),
    )
    blocks = [
        TransformerBlock(
            model._attention(index),
            remat=model.remat,
            name=f"block_{index}",
            **model._sublayer,
            **options_of(TransformerBlock, model.layer_options),
        )
        for index in range(model.depth)
    ]
    return embedding, blocks


def model_config(model):
    """A functional task's config: Keras' own arguments, every constructor argument (each stored
    as the attribute of its name) and its layer options (`layer_options`)."""
    names = [
        name
        for name, parameter in inspect.signature(type(model).__init__).parameters.items()
        if name != "self" and parameter.kind is parameter.POSITIONAL_OR_KEYWORD
    ]
    return dict(
        name=model.name,
        trainable=model.trainable,
        dtype=keras.dtype_policies.serialize(model._sublayer["dtype"]),
        **{name: getattr(model, name) for name in names},
        **model.layer_options,
    )


PerformerClassifier.SETTINGS = settings.describe(
    PerformerClassifier,
    ("dim", "depth", "heads", "pos_scales", "position_kernel", "locality", "margin", "remat"),
    choices={"position_kernel": POSITION_KERNELS},
    models={name: ("RelativePerformer",) for name in ("pos_scales", "position_kernel", "locality")},
    search={"depth": settings.Int(1, 6), "pos_scales": settings.Int(1, 8)},
)
# Every model option, each described by the constructor that uses it.
MODEL_SETTINGS = PerformerClassifier.SETTINGS + tuple(
    s for owner in LAYER_OWNERS for s in owner.SETTINGS
)


def check_hparams(name, *, image_shape, num_classes, **hparams):
    """Checks a model's settings without building it (see `PerformerClassifier.check_settings`)."""
    settings.check_choice("model", name, MODEL_NAMES)
    hparams = {k: v for k, v in hparams.items() if v is not None or k == "nb_features"}
    return PerformerClassifier.check_settings(
        image_shape=image_shape,
        num_classes=num_classes,
        position_encoding=POSITION_ENCODINGS[name],
        **hparams,
    )


def build_model(name, *, image_shape, num_classes, **hparams):
    """Builds one of `MODEL_NAMES` as a `keras.Model` (built, not compiled).

    Args:
        name: one of `MODEL_NAMES`.
        image_shape: (H, W, C) of the input images.
        num_classes: int, number of output logits.
        **hparams: any of `MODEL_SETTINGS` (None: its default), `seed`, and
            Keras' `dtype` (a dtype policy).

    Returns:
        A built `PerformerClassifier`: images `[batch, H, W, C]` → logits
        `[batch, num_classes]`.
    """
    check_hparams(name, image_shape=image_shape, num_classes=num_classes, **hparams)
    hparams = {k: v for k, v in hparams.items() if v is not None or k == "nb_features"}
    return PerformerClassifier(
        image_shape=tuple(image_shape),
        num_classes=num_classes,
        position_encoding=POSITION_ENCODINGS[name],
        name=name,
        **hparams,
    )
