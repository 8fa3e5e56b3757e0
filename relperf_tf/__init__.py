"""relperf_tf: translation-equivariant Performers in Keras 3.

Implements *Translational Equivariance in Kernelizable Attention*
(Horn et al., 2021, arXiv:2102.07680) on top of FAVOR+ (arXiv:2009.14794).

The library is `relperf_tf.layers` (attention and embedding layers),
`relperf_tf.models` (the backbone, its position strategies, the tasks and
presets) and `relperf_tf.schedules`. Importing it registers its Keras objects
(so `.keras` files reload) and, before Keras loads TensorFlow, applies
`cpu_tuning`'s process settings: glibc's malloc thresholds raised (TensorFlow's
per-step blocks stay in the heap; `RELPERF_MALLOC_TUNING=0` leaves malloc
alone) and `TF_ENABLE_ONEDNN_OPTS=1` when unset. The application
(data, training, tuning, export, the `relperf-*` commands) is
`relperf_tf.app`, which imports the library and never the other way round.
"""

from relperf_tf.cpu_tuning import tune_process

tune_process()  # before Keras loads TensorFlow, which reads TF_ENABLE_ONEDNN_OPTS once

from relperf_tf import layers, models, schedules  # noqa: E402
from relperf_tf.models import (  # noqa: E402
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
__version__ = "0.2.0"
