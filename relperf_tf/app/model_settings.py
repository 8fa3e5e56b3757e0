"""The library's constructor arguments that the application exposes: flags, tuner, hparams.json.

Defaults, types, help and checks stay with the library constructors; this
module only names which arguments are user-facing, which models use them and
how the tuner searches them.
"""

from relperf_tf.app import settings
from relperf_tf.layers import (
    ClippedRelativeAttention,
    FavorKernel,
    PixelEmbedding,
    RelativeFavorAttention,
    TransformerBlock,
)
from relperf_tf.layers.feature_maps import FEATURE_MAPS
from relperf_tf.layers.pixel_embedding import EMBEDDING_TYPES
from relperf_tf.layers.relative_attention import POSITION_KERNELS
from relperf_tf.models import ImageClassifier, PerformerBackbone

_BACKBONE = settings.describe(
    PerformerBackbone,
    ("dim", "depth", "heads", "pos_scales", "position_kernel", "locality"),
    choices={"position_kernel": POSITION_KERNELS},
    models={name: ("RelativePerformer",) for name in ("pos_scales", "position_kernel", "locality")},
    search={"depth": settings.Int(1, 6), "pos_scales": settings.Int(1, 8)},
)
_LAYERS = (
    settings.describe(
        PixelEmbedding,
        PixelEmbedding.OPTIONS,
        choices={"embedding_type": EMBEDDING_TYPES},
        search={"embedding_type": settings.Choice(EMBEDDING_TYPES)},
    )
    + settings.describe(
        TransformerBlock,
        TransformerBlock.OPTIONS,
        search=dict(
            {name: settings.Float(0.0, 0.3, step=0.1) for name in ("attn_dropout", "ff_dropout")},
            ff_multiplier=settings.Choice((2, 4)),
        ),
    )
    + settings.describe(
        FavorKernel,
        FavorKernel.OPTIONS,
        choices={"feature_map": tuple(FEATURE_MAPS)},
        search={
            "nb_features": settings.Choice((16, 32, 64, 128)),
            "feature_redraw_interval": settings.Choice((0, 100, 1000)),
        },
    )
    + settings.describe(
        RelativeFavorAttention,
        RelativeFavorAttention.OPTIONS,
        models={"content_rel_attn": ("RelativePerformer",)},
        search={"content_rel_attn": settings.Boolean()},
    )
    + settings.describe(
        ClippedRelativeAttention,
        ClippedRelativeAttention.OPTIONS,
        models={"clipping_dist": ("ClippedRelativePerformer",)},
        search={"clipping_dist": settings.Int(2, 10)},
    )
)
# Every model option of the image task, each described by the constructor that uses it.
MODEL_SETTINGS = (
    _BACKBONE
    + settings.describe(ImageClassifier, ("margin",))
    + settings.describe(PerformerBackbone, ("remat",))
    + _LAYERS
)
# The sequence task's own: a causal backbone.
SEQUENCE_SETTINGS = settings.describe(PerformerBackbone, ("causal",))
