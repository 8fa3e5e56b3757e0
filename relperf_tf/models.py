"""The model factory: four Performers that differ only in how positions enter.

All four share one pixel-embedding path, one `TransformerBlock` stack and one
classifier head; `position_encoding` selects the strategy:

| model                    | position_encoding | attention                   |
|--------------------------|-------------------|-----------------------------|
| Performer                | absolute          | FavorAttention              |
| NoposPerformer           | none              | FavorAttention              |
| RelativePerformer        | relative          | RelativeFavorAttention      |
| ClippedRelativePerformer | clipped           | ClippedRelativeAttention    |

`SoftmaxAttentionClassifier` is `Performer` with Keras' exact
`MultiHeadAttention` in every block: the quadratic baseline of the benchmarks.
"""

import warnings

import keras
import numpy as np
from keras import ops

from relperf_tf.direct_steps import DirectXlaSteps
from relperf_tf.layers import (
    ClassToken,
    ClippedRelativeAttention,
    FavorAttention,
    GridRelativeAttention,
    LearnableSinusoidEncoding,
    PixelEmbedding,
    RelativeFavorAttention,
    SoftmaxSelfAttention,
    TransformerBlock,
)
from relperf_tf.layers.grid_attention import relative_offsets
from relperf_tf.layers.locality_prior import initial_frequencies, local_rotations

# With an exact positional factor, the last block's class-token query has
# factor 1 with every token: its α, β are not used, and Keras' optimizer would
# warn about their missing gradients on every `fit`.
warnings.filterwarnings(
    "ignore", message=r"Gradients do not exist for variables \[('[^']*/attention/(alpha|beta)'(, )?)+\]"
)

MODEL_NAMES = ("Performer", "NoposPerformer", "RelativePerformer", "ClippedRelativePerformer")
POSITION_ENCODINGS = {
    "Performer": "absolute",
    "NoposPerformer": "none",
    "RelativePerformer": "relative",
    "ClippedRelativePerformer": "clipped",
}
# How RelativePerformer's positional logits enter: estimated with the content by
# FAVOR+ (the paper), or as an exact factor with grid offsets or cyclic ones.
POSITION_KERNELS = ("favor", "exact", "circular")
# Reference defaults (DESIGN §5).
DEFAULT_HPARAMS = dict(
    dim=128,
    depth=4,
    heads=4,
    attn_dropout=0.1,
    ff_dropout=0.1,
    embedding_type="linear",
    nb_features=None,
    feature_redraw_interval=1000,
    no_projection=False,
    kernel="softmax",
    pos_scales=4,
    content_rel_attn=False,
    position_kernel="favor",
    locality=0.0,
    margin=0,
    clipping_dist=8,
    seed=0,
    remat=False,
)


def display_name(model_name, position_kernel="favor"):
    """How results name a model: RelativePerformer's exact paths are named apart."""
    if model_name == "RelativePerformer" and position_kernel not in (None, "favor"):
        return f"{model_name} ({position_kernel})"
    return model_name


def grid_coordinates(height, width):
    """Row-major (row, col) coordinates of an H×W grid, float32 `[H·W, 2]`."""
    rows, cols = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    return np.stack([rows.ravel(), cols.ravel()], axis=1).astype("float32")


def _check_positive_int(name, value, minimum=1):
    if isinstance(value, bool) or int(value) != value or value < minimum:
        raise ValueError(f"{name}={value!r} is not allowed; use an integer >= {minimum}.")


@keras.saving.register_keras_serializable(package="relperf_tf")
class PerformerClassifier(DirectXlaSteps, keras.Model):
    """Image classifier: pixels as tokens, class token, FAVOR+ blocks, linear head.

    Images `[batch, H, W, C]` → logits `[batch, num_classes]`. Build it with
    `build_model(name, ...)`; arguments are those of `DEFAULT_HPARAMS` plus
    `image_shape`, `num_classes` and `position_encoding` (see module docstring).
    """

    def __init__(
        self,
        image_shape,
        num_classes,
        position_encoding="absolute",
        dim=128,
        depth=4,
        heads=4,
        attn_dropout=0.1,
        ff_dropout=0.1,
        embedding_type="linear",
        nb_features=None,
        feature_redraw_interval=1000,
        no_projection=False,
        kernel="softmax",
        pos_scales=4,
        content_rel_attn=False,
        position_kernel="favor",
        locality=0.0,
        margin=0,
        clipping_dist=8,
        seed=0,
        remat=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if position_encoding not in POSITION_ENCODINGS.values():
            raise ValueError(
                f"position_encoding={position_encoding!r} is not allowed; "
                f"use one of {tuple(POSITION_ENCODINGS.values())}."
            )
        if len(image_shape) != 3:
            raise ValueError(
                f"image_shape={tuple(image_shape)} is not allowed; use (height, width, channels)."
            )
        for name, value in (("dim", dim), ("depth", depth), ("heads", heads), ("pos_scales", pos_scales), ("clipping_dist", clipping_dist), ("num_classes", num_classes)):
            _check_positive_int(name, value)
        if nb_features is not None:
            _check_positive_int("nb_features", nb_features)
        if dim % heads:
            raise ValueError(f"dim={dim} is not divisible by heads={heads}; choose heads that divide dim.")
        if position_kernel not in POSITION_KERNELS:
            raise ValueError(
                f"position_kernel={position_kernel!r} is not allowed; use one of {POSITION_KERNELS}."
            )
        if isinstance(locality, bool) or not float(locality) >= 0.0:
            raise ValueError(f"locality={locality!r} is not allowed; use a number >= 0 (0: the paper's N(0, 1) init).")
        _check_positive_int("margin", margin, minimum=0)
        if position_encoding == "absolute" and dim % 4:
            raise ValueError(f"dim={dim} is not allowed for Performer; use a multiple of 4.")
        self.image_shape = tuple(int(s) for s in image_shape)
        self.num_classes = int(num_classes)
        self.position_encoding = position_encoding
        self.dim, self.depth, self.heads = int(dim), int(depth), int(heads)
        self.attn_dropout, self.ff_dropout = float(attn_dropout), float(ff_dropout)
        self.embedding_type = embedding_type
        self.nb_features = nb_features
        self.feature_redraw_interval = feature_redraw_interval
        self.no_projection = bool(no_projection)
        self.kernel = kernel
        self.pos_scales = int(pos_scales)
        self.content_rel_attn = bool(content_rel_attn)
        self.position_kernel = position_kernel
        self.locality = float(locality)
        self.margin = int(margin)
        self.clipping_dist = int(clipping_dist)
        self.seed = int(seed)
        self.remat = bool(remat)

        height, width = self.grid_shape
        self._coordinates = grid_coordinates(height, width)
        self.embedding = PixelEmbedding(dim, embedding_type, name="embedding")
        self.positions = None
        if position_encoding == "absolute":
            self.positions = LearnableSinusoidEncoding(dim // 4, 1000.0 * max(height, width), name="positions")
        elif position_encoding == "relative":
            self.positions = LearnableSinusoidEncoding(self.pos_scales, 2.0 * max(height, width), name="positions")
        self.class_token = ClassToken("last" if position_encoding == "clipped" else "first", name="class_token")
        self.blocks = [
            TransformerBlock(self._attention(index), attn_dropout, ff_dropout, remat=self.remat, name=f"block_{index}")
            for index in range(self.depth)
        ]
        self.head = keras.layers.Dense(num_classes, name="head")

    def _attention(self, index):
        """The attention layer of block `index`: the one place the variants differ."""
        favor = dict(
            nb_features=self.nb_features,
            kernel=self.kernel,
            no_projection=self.no_projection,
            feature_redraw_interval=self.feature_redraw_interval,
            seed=self.seed * 1000 + index,
            remat=self.remat,
            name="attention",
        )
        if self.position_encoding == "relative":
            layer = GridRelativeAttention if self.position_kernel != "favor" else RelativeFavorAttention
            return layer(self.heads, content_rel_attn=self.content_rel_attn, **self._rotation_initializers(), **favor)
        if self.position_encoding == "clipped":
            return ClippedRelativeAttention(
                self.heads, grid_shape=self.grid_shape, clipping_dist=self.clipping_dist, **favor
            )
        return FavorAttention(self.heads, **favor)

    def build(self, input_shape):
        if len(input_shape) != 4:
            raise ValueError(f"images of rank {len(input_shape)} are not allowed; use [batch, H, W, C].")
        height, width = self.grid_shape
        tokens = height * width + 1
        self.embedding.build(input_shape)
        self.class_token.build((None, tokens - 1, self.dim))
        positions_shape = None
        if self.positions is not None:
            self.positions.build(self._coordinates.shape)
            if self._grid_positions():
                positions_shape = [(height, height, 2 * self.pos_scales), (width, width, 2 * self.pos_scales)]
            elif self.position_encoding == "relative":
                positions_shape = (tokens, 4 * self.pos_scales)
        for block in self.blocks:
            block.build((None, tokens, self.dim), positions_shape)
        self.head.build((None, self.dim))

    def call(self, images, training=None):
        if len(images.shape) != 4:
            raise ValueError(f"images of rank {len(images.shape)} are not allowed; use [batch, H, W, C].")
        if tuple(images.shape[1:]) != self.image_shape:
            raise ValueError(
                f"images of shape {tuple(images.shape[1:])} are not allowed; "
                f"this model takes {self.image_shape}."
            )
        if self.margin:
            # Background (zero after preprocessing) around the image: the frame moves away.
            pad = (0, 0), (self.margin, self.margin), (self.margin, self.margin), (0, 0)
            images = ops.pad(images, pad)
        tokens = self.embedding(images)  # [b, H·W, dim] of the grid
        positions = None
        if self.position_encoding == "absolute":
            tokens = tokens + ops.cast(self.positions(self._coordinates), tokens.dtype)[None]
        elif self._grid_positions():
            circular = self.position_kernel == "circular"
            positions = [self.positions(relative_offsets(n, circular)[..., None]) for n in self.grid_shape]
        elif self.position_encoding == "relative":
            encodings = self.positions(self._coordinates)  # [H·W, 4S]
            positions = ops.pad(encodings, ((1, 0), (0, 0)))  # class token first: zeros
        x = self.class_token(tokens)
        for block in self.blocks[:-1]:
            x = block(x, positions, training=training)
        # The head reads the class token only: the last block computes nothing else.
        x = self.blocks[-1](x, positions, training=training, query_index=self.class_token.index())
        return self.head(x[:, 0])

    @property
    def grid_shape(self):
        """(rows, columns) of the token grid: the image and its margin."""
        return tuple(size + 2 * self.margin for size in self.image_shape[:2])

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

    def _grid_positions(self):
        """Whether attention takes the encodings of row and column offsets (exact factor)."""
        return self.position_encoding == "relative" and self.position_kernel != "favor"

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.num_classes)

    def get_config(self):
        config = {"name": self.name, "trainable": self.trainable}
        config.update(
            image_shape=self.image_shape,
            num_classes=self.num_classes,
            position_encoding=self.position_encoding,
            dim=self.dim,
            depth=self.depth,
            heads=self.heads,
            attn_dropout=self.attn_dropout,
            ff_dropout=self.ff_dropout,
            embedding_type=self.embedding_type,
            nb_features=self.nb_features,
            feature_redraw_interval=self.feature_redraw_interval,
            no_projection=self.no_projection,
            kernel=self.kernel,
            pos_scales=self.pos_scales,
            content_rel_attn=self.content_rel_attn,
            position_kernel=self.position_kernel,
            locality=self.locality,
            margin=self.margin,
            clipping_dist=self.clipping_dist,
            seed=self.seed,
            remat=self.remat,
        )
        return config


@keras.saving.register_keras_serializable(package="relperf_tf")
class SoftmaxAttentionClassifier(PerformerClassifier):
    """`Performer` whose attention is `keras.layers.MultiHeadAttention` (exact softmax).

    Same embedding, absolute positions, blocks and head; only the attention
    layer differs, so benchmarks compare FAVOR+ with quadratic attention in
    the same architecture. FAVOR+ options are accepted and ignored.
    """

    def _attention(self, index):
        return SoftmaxSelfAttention(self.heads, self.dim // self.heads, name="attention")


def build_model(name, *, image_shape, num_classes, **hparams):
    """Builds one of `MODEL_NAMES` as a `keras.Model` (built, not compiled).

    Args:
        name: one of `MODEL_NAMES`.
        image_shape: (H, W, C) of the input images.
        num_classes: int, number of output logits.
        **hparams: any of `DEFAULT_HPARAMS`; the rest keep their defaults.

    Returns:
        A built `PerformerClassifier`: images `[batch, H, W, C]` → logits
        `[batch, num_classes]`.
    """
    if name not in MODEL_NAMES:
        raise ValueError(f"model={name!r} is not allowed; use one of {MODEL_NAMES}.")
    unknown = sorted(set(hparams) - set(DEFAULT_HPARAMS))
    if unknown:
        raise ValueError(
            f"unknown hyperparameters {unknown}; allowed: {sorted(DEFAULT_HPARAMS)}."
        )
    config = {**DEFAULT_HPARAMS, **{k: v for k, v in hparams.items() if v is not None or k == "nb_features"}}
    if len(tuple(image_shape)) != 3:
        raise ValueError(
            f"image_shape={tuple(image_shape)} is not allowed; use (height, width, channels) "
            "for images of rank 4 [batch, H, W, C]."
        )
    model = PerformerClassifier(
        image_shape=tuple(image_shape),
        num_classes=num_classes,
        position_encoding=POSITION_ENCODINGS[name],
        name=name,
        **config,
    )
    model.build((None,) + tuple(image_shape))
    return model
