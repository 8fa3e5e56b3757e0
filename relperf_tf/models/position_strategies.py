"""How positions enter a `PerformerBackbone`: one small registry, one class per strategy.

A strategy makes the backbone's shared position layers, joins positions to the
tokens or hands them to the blocks, and makes each block's attention layer:

| name       | model                    | positions                                          |
|------------|--------------------------|----------------------------------------------------|
| `absolute` | Performer                | learnable sinusoids of the coordinates, added      |
| `none`     | NoposPerformer           | none                                               |
| `relative` | RelativePerformer        | strategy 1: rotated sin/cos features in q·k        |
| `clipped`  | ClippedRelativePerformer | strategy 2: embeddings of clipped distances        |
| `learned`  | LearnedPositionPerformer | a learned vector per token position, added         |

On a grid (`backbone.grid_shape`) positions are the tokens' (row, column);
on a 1-D backbone (`grid_shape=None`) they are the token order. A new
strategy is one subclass here and one `register` call.
"""

import keras
import numpy as np
from keras import ops

from relperf_tf import validation
from relperf_tf.layers import (
    ClippedRelativeAttention,
    FavorAttention,
    LearnableSinusoidEncoding,
    RelativeFavorAttention,
)
from relperf_tf.layers.grid_positions import GridPositions
from relperf_tf.layers.locality_prior import initial_frequencies, local_rotations
from relperf_tf.layers.position_embedding import PositionEmbedding
from relperf_tf.layers.token_positions import TokenPositions
from relperf_tf.models.layer_options import options_of

POSITION_STRATEGIES = {}
"""The registered `PositionStrategy` instances by name (`register`)."""


def register(strategy):
    """Adds a `PositionStrategy` instance to `POSITION_STRATEGIES` under its `name`."""
    POSITION_STRATEGIES[strategy.name] = strategy
    return strategy


def get(name):
    """The strategy called `name` (InvalidSetting naming `position_encoding` otherwise)."""
    validation.check_choice("position_encoding", name, tuple(POSITION_STRATEGIES))
    return POSITION_STRATEGIES[name]


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


class PositionStrategy:
    """No positions: the base every strategy refines.

    Methods take the backbone (its arguments are attributes of the same
    name) and are called in this order: `check` (arguments only, before
    anything is built), `layers` (once, in the backbone's constructor),
    `apply` (each time the backbone's graph is built) and `attention` (per
    block).
    """

    name = "none"
    model_name = "NoposPerformer"
    # Where the class token sits, when the backbone has one.
    class_token_position = "first"

    def check(self, arguments):
        """Rules of this strategy on the backbone's `arguments` (InvalidSetting)."""

    def layers(self, backbone):
        """The strategy's own layers, `{attribute: layer}` set on the backbone."""
        return {}

    def apply(self, backbone, tokens):
        """tokens `[b, N, dim]` → (tokens, positions for every block or None)."""
        return tokens, None

    def attention(self, backbone, index, favor):
        """Block `index`'s attention layer; `favor` holds its FAVOR+ options, seed, name."""
        return FavorAttention(backbone.heads, **favor)


def _float32(backbone):
    # Positions compute in float32 under any policy: in bf16, ω·p for p up to the
    # grid size would carry phase errors of a tenth of a radian.
    return backbone.sublayer_options["dtype"].variable_dtype


class AbsolutePositions(PositionStrategy):
    """Learnable sinusoids of each token's (row, column) or index, added to the tokens."""

    name = "absolute"
    model_name = "Performer"

    def check(self, arguments):
        if arguments["dim"] % 4:
            raise validation.InvalidSetting(
                f"dim={arguments['dim']} is not allowed with position_encoding='absolute' "
                "(Performer); use a multiple of 4.",
                ["dim"],
            )

    def layers(self, backbone):
        if backbone.grid_shape is None:
            encoding = LearnableSinusoidEncoding(
                backbone.dim // 2,
                1000.0 * backbone.max_length,
                name="positions",
                dtype=_float32(backbone),
            )
            coordinates = TokenPositions(name="token_positions")
        else:
            encoding = LearnableSinusoidEncoding(
                backbone.dim // 4,
                1000.0 * max(backbone.grid_shape),
                name="positions",
                dtype=_float32(backbone),
            )
            coordinates = GridPositions(backbone.grid_shape, name="grid_coordinates")
        return {"positions": encoding, "_coordinates": coordinates}

    def apply(self, backbone, tokens):
        encodings = backbone.positions(backbone._coordinates(tokens))  # [N, dim]
        return tokens + ops.expand_dims(ops.cast(encodings, tokens.dtype), 0), None


class RelativePositions(PositionStrategy):
    """Strategy 1: rotated sinusoid features of the positions enter q·k (`position_kernel`)."""

    name = "relative"
    model_name = "RelativePerformer"

    def check(self, arguments):
        RelativeFavorAttention.check_kernel(
            arguments["position_kernel"], arguments.get("content_rel_attn", False)
        )

    def layers(self, backbone):
        if backbone.grid_shape is None:
            return {}  # each attention layer encodes the token order itself
        encoding = LearnableSinusoidEncoding(
            backbone.pos_scales,
            2.0 * max(backbone.grid_shape),
            name="positions",
            dtype=_float32(backbone),
        )
        if backbone.position_kernel == "favor":
            kinds = {"_coordinates": ("coordinates", "grid_coordinates")}
        else:
            kinds = {"_row_offsets": ("row_offsets",) * 2, "_col_offsets": ("col_offsets",) * 2}
        circular = backbone.position_kernel == "circular"
        layers = {
            attribute: GridPositions(backbone.grid_shape, kind, circular, name=name)
            for attribute, (kind, name) in kinds.items()
        }
        return {"positions": encoding, **layers}

    def apply(self, backbone, tokens):
        if backbone.grid_shape is None:
            return tokens, None
        if backbone.position_kernel != "favor":
            # Encodings of the row and column offsets: the exact factor's two tables.
            return tokens, [
                backbone.positions(backbone._row_offsets(tokens)),
                backbone.positions(backbone._col_offsets(tokens)),
            ]
        encodings = backbone.positions(backbone._coordinates(tokens))  # [H·W, 4S]
        if backbone.class_token:
            # The class token (first) has no position: zeros.
            encodings = ops.pad(encodings, ((1, 0), (0, 0)))
        return tokens, encodings

    def attention(self, backbone, index, favor):
        own = dict(pos_scales=None)  # a grid's encodings come from the backbone, shared
        if backbone.grid_shape is None:
            own = dict(pos_scales=backbone.pos_scales, max_timescale=2.0 * backbone.max_length)
        return RelativeFavorAttention(
            backbone.heads,
            position_kernel=backbone.position_kernel,
            **own,
            **options_of(RelativeFavorAttention, backbone.layer_options),
            **self._rotation_initializers(backbone),
            **favor,
        )

    @staticmethod
    def _rotation_initializers(backbone):
        """α, β initializers: N(0, 1) (the paper), or the locality prior (`locality` > 0)."""
        if not backbone.locality:
            return {}
        if backbone.grid_shape is None:
            frequencies = initial_frequencies(backbone.pos_scales, 2.0 * backbone.max_length)
            alpha, beta = sequence_rotations(backbone.heads, frequencies, backbone.locality)
        else:
            frequencies = initial_frequencies(backbone.pos_scales, backbone.positions.max_timescale)
            alpha, beta = local_rotations(backbone.heads, frequencies, backbone.locality)
        return dict(
            alpha_initializer=keras.initializers.Constant(alpha),
            beta_initializer=keras.initializers.Constant(beta),
        )


class ClippedPositions(PositionStrategy):
    """Strategy 2: half the heads add learned embeddings of clipped distances (bidirectional)."""

    name = "clipped"
    model_name = "ClippedRelativePerformer"
    class_token_position = "last"

    def check(self, arguments):
        ClippedRelativeAttention.check_heads_even(arguments["heads"])
        if arguments.get("causal"):
            raise validation.InvalidSetting(
                "causal=True is not allowed with position_encoding='clipped' "
                "(ClippedRelativePerformer: its windows look both ways); use another "
                "position_encoding or causal=False.",
                ["causal"],
            )

    def attention(self, backbone, index, favor):
        where = (
            dict(class_token=False)
            if backbone.grid_shape is None
            else dict(grid_shape=backbone.grid_shape, class_token=backbone.class_token)
        )
        return ClippedRelativeAttention(
            backbone.heads,
            **where,
            **options_of(ClippedRelativeAttention, backbone.layer_options),
            **favor,
        )


class LearnedPositions(PositionStrategy):
    """A learned vector per token position (BERT/ViT style), added: fixed length, not relative.

    The table has one row per grid token, or `max_length` rows on a 1-D
    backbone (longer sequences are rejected at call time).
    """

    name = "learned"
    model_name = "LearnedPositionPerformer"

    def layers(self, backbone):
        length = (
            backbone.max_length
            if backbone.grid_shape is None
            else int(np.prod(backbone.grid_shape))
        )
        return {"positions": PositionEmbedding(length, name="positions", dtype=_float32(backbone))}

    def apply(self, backbone, tokens):
        return backbone.positions(tokens), None


for _strategy in (
    AbsolutePositions(),
    PositionStrategy(),
    RelativePositions(),
    ClippedPositions(),
    LearnedPositions(),
):
    register(_strategy)
