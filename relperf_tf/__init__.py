"""relperf_tf: translation-equivariant Performers in Keras 3.

Implements *Translational Equivariance in Kernelizable Attention*
(Horn et al., 2021, arXiv:2102.07680) on top of FAVOR+ (arXiv:2009.14794).

The library is `relperf_tf.layers` (attention and embedding layers),
`relperf_tf.models` (the backbone, its position strategies, the tasks and
presets) and `relperf_tf.schedules`; it needs Keras and NumPy, on any Keras
backend. Importing it registers its Keras objects (so `.keras` files reload)
and changes nothing else in the process. The application (data, training,
tuning, export, the `relperf-*` commands) is `relperf_tf.app`, which imports
the library and never the other way round, and needs the `app` extra
(TensorFlow for tf.data, tf.distribute and SavedModel).
"""

from relperf_tf import layers, models, schedules
from relperf_tf.models import (
    MODEL_NAMES,
    ImageClassifier,
    PerformerBackbone,
    PerformerClassifier,
    SequenceClassifier,
    build_model,
    build_sequence_model,
)

__all__ = [
    "MODEL_NAMES",
    "ImageClassifier",
    "PerformerBackbone",
    "PerformerClassifier",
    "SequenceClassifier",
    "build_model",
    "build_sequence_model",
    "layers",
    "models",
    "schedules",
]
__version__ = "0.3.0"
