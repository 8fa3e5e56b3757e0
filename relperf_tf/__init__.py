"""relperf_tf: translation-equivariant Performers in Keras 3 / TensorFlow.

Implements *Translational Equivariance in Kernelizable Attention*
(Horn et al., 2021, arXiv:2102.07680) on top of FAVOR+ (arXiv:2009.14794).
"""

import os

# The library is written for the TensorFlow backend (tf.data, tf.distribute,
# SavedModel); choose it unless the user already picked one explicitly.
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

from relperf_tf import layers  # noqa: E402,F401
# Registers WarmupSchedule, which every saved `.keras` checkpoint's optimizer names.
from relperf_tf import schedules  # noqa: E402,F401
from relperf_tf.models import MODEL_NAMES, PerformerClassifier, build_model  # noqa: E402,F401

__version__ = "0.1.0"
