"""Models of relperf_tf: the backbone, its position strategies, the tasks and presets."""

from relperf_tf.models import presets
from relperf_tf.models.image_classifier import ImageClassifier, PerformerClassifier
from relperf_tf.models.model_factory import (
    MODEL_NAMES,
    POSITION_ENCODINGS,
    build_model,
    build_sequence_model,
    check_hparams,
    check_sequence_hparams,
    display_name,
)
from relperf_tf.models.performer_backbone import PerformerBackbone
from relperf_tf.models.position_strategies import POSITION_STRATEGIES, PositionStrategy
from relperf_tf.models.presets import PRESETS
from relperf_tf.models.sequence_classifier import SequenceClassifier
from relperf_tf.models.task import Task

__all__ = [
    "MODEL_NAMES",
    "POSITION_ENCODINGS",
    "POSITION_STRATEGIES",
    "PRESETS",
    "ImageClassifier",
    "PerformerBackbone",
    "PerformerClassifier",
    "PositionStrategy",
    "SequenceClassifier",
    "Task",
    "build_model",
    "build_sequence_model",
    "check_hparams",
    "check_sequence_hparams",
    "display_name",
    "presets",
]
