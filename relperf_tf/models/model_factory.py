"""The model factory: one task per model name, the names differing only in how positions enter.

| model                    | position_encoding | attention                   |
|--------------------------|-------------------|-----------------------------|
| Performer                | absolute          | FavorAttention              |
| NoposPerformer           | none              | FavorAttention              |
| RelativePerformer        | relative          | RelativeFavorAttention      |
| ClippedRelativePerformer | clipped           | ClippedRelativeAttention    |
| LearnedPositionPerformer | learned           | FavorAttention              |

(`position_strategies` holds the strategies; a new one registers its model name.)
"""

from relperf_tf import validation
from relperf_tf.models.image_classifier import ImageClassifier, PerformerClassifier
from relperf_tf.models.performer_backbone import PerformerBackbone
from relperf_tf.models.position_strategies import POSITION_STRATEGIES
from relperf_tf.models.sequence_classifier import SequenceClassifier

POSITION_ENCODINGS = {s.model_name: s.name for s in POSITION_STRATEGIES.values()}
"""Each model name's position strategy (`position_strategies`), e.g. `Performer` → `absolute`."""
MODEL_NAMES = tuple(POSITION_ENCODINGS)
"""The models `build_model` and the commands know: `Performer`, `NoposPerformer`,
`RelativePerformer`, `ClippedRelativePerformer`, `LearnedPositionPerformer`."""


def display_name(model_name, position_kernel="favor"):
    """How results name a model: RelativePerformer's exact paths are named apart."""
    if model_name == "RelativePerformer" and position_kernel not in (None, "favor"):
        return f"{model_name} ({position_kernel})"
    return model_name


def _backbone_arguments(name, hparams):
    validation.check_choice("model", name, MODEL_NAMES)
    hparams = {k: v for k, v in hparams.items() if v is not None or k == "nb_features"}
    return dict(hparams, position_encoding=POSITION_ENCODINGS[name])


def _image_backbone_arguments(name, image_shape, hparams):
    arguments = _backbone_arguments(name, hparams)
    image_shape = PerformerClassifier.check_image_shape(image_shape)
    margin = arguments.pop("margin", 0)
    validation.check_int("margin", margin, 0)
    arguments.update(
        channels=image_shape[2],
        grid_shape=tuple(size + 2 * int(margin) for size in image_shape[:2]),
        class_token=True,
    )
    return arguments, margin


def check_hparams(name, *, image_shape, num_classes, **hparams):
    """Checks an image model's settings without building it; returns its layer options."""
    arguments, margin = _image_backbone_arguments(name, image_shape, hparams)
    validation.check_int("num_classes", num_classes, 1)
    arguments.pop("dtype", None)
    return PerformerBackbone.check_settings(**arguments)


def build_model(name, *, image_shape, num_classes, **hparams):
    """Builds one of `MODEL_NAMES` as an `ImageClassifier` (built, not compiled).

    Args:
        name: one of `MODEL_NAMES`.
        image_shape: (H, W, C) of the input images.
        num_classes: int, number of output logits.
        **hparams: `PerformerBackbone`'s arguments and its layer options (None:
            the default), the classifier's `margin`, and Keras' `dtype`.

    Returns:
        A built `ImageClassifier`: images `[batch, H, W, C]` → logits
        `[batch, num_classes]`, named `name`.
    """
    check_hparams(name, image_shape=image_shape, num_classes=num_classes, **hparams)
    arguments, margin = _image_backbone_arguments(name, image_shape, hparams)
    backbone = PerformerBackbone(**arguments)
    return ImageClassifier(backbone, num_classes, margin=margin, name=name)


def _sequence_arguments(name, channels, max_length, hparams):
    arguments = _backbone_arguments(name, hparams)
    arguments.pop("margin", None)  # an image setting
    return dict(arguments, channels=channels, max_length=max_length)


def check_sequence_hparams(name, *, channels, num_classes, max_length, **hparams):
    """Checks a sequence model's settings without building it (InvalidSetting)."""
    arguments = _sequence_arguments(name, channels, max_length, hparams)
    validation.check_int("num_classes", num_classes, 1)
    arguments.pop("dtype", None)
    return PerformerBackbone.check_settings(**arguments)


def build_sequence_model(name, *, channels, num_classes, max_length, **hparams):
    """Builds one of `MODEL_NAMES` as a `SequenceClassifier` (built, not compiled).

    Args:
        name: one of `MODEL_NAMES`.
        channels: int, values per token.
        num_classes: int, number of logits.
        max_length: int, the training sequence length (any length runs).
        **hparams: `PerformerBackbone`'s arguments and layer options (None: the
            default), and Keras' `dtype`.
    """
    backbone = PerformerBackbone(**_sequence_arguments(name, channels, max_length, hparams))
    return SequenceClassifier(backbone, num_classes, name=name)
