"""relperf_tf: translation-equivariant Performers in Keras 3 / TensorFlow.

Implements *Translational Equivariance in Kernelizable Attention*
(Horn et al., 2021, arXiv:2102.07680) on top of FAVOR+ (arXiv:2009.14794).
"""

import os

from relperf_tf import fast_malloc

# The project's commands restart here, before TensorFlow loads (fast_malloc).
fast_malloc.prepare_command()

# The library is written for the TensorFlow backend (tf.data, tf.distribute,
# SavedModel); choose it unless the user already picked one explicitly.
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

# Importing the layers and the schedule registers them, so `.keras` files reload
# (every checkpoint's optimizer names WarmupSchedule).
from relperf_tf import layers, schedules
from relperf_tf.models import MODEL_NAMES, PerformerClassifier, build_model
from relperf_tf.sequence_classifier import SequenceClassifier, build_sequence_model

__all__ = [
    "MODEL_NAMES",
    "PerformerClassifier",
    "SequenceClassifier",
    "build_model",
    "build_sequence_model",
    "layers",
    "schedules",
]
__version__ = "0.1.0"
