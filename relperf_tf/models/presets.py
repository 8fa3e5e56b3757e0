"""Presets: the shipped, trained models by name (`ImageClassifier.from_preset(name)`).

Each preset is a folder holding `model.keras` (the trained Keras model) beside
its TF Serving SavedModel and README. Names resolve to folders under
`$RELPERF_PRESETS_DIR` (a path list, first match wins), then under the source
checkout's `saved_models/`; a path to a preset folder or a `.keras` file loads
directly.
"""

import os

import keras

PRESETS = {
    "performer_fashion_mnist": (
        "Performer (absolute learnable sinusoids), dim 64, depth 4, 8 heads, m 16, Fashion-MNIST "
        "on a 32×32 canvas, the relative models' recipe; test accuracy 0.8512: the baseline that "
        "collapses when objects move."
    ),
    "relative_performer_circular_fashion_mnist": (
        "RelativePerformer with the circular exact positional factor, dim 64, depth 4, 8 heads, "
        "m 4, Fashion-MNIST; test accuracy 0.8868, invariant to cyclic shifts by construction."
    ),
    "relative_performer_exact_fashion_mnist": (
        "RelativePerformer with the exact positional factor (finite-grid offsets), dim 64, "
        "depth 6, 8 heads, m 4, Fashion-MNIST; test accuracy 0.8966, shift robust (≥ 0.99× its "
        "s = 0 accuracy at every shift in [−8, 8])."
    ),
    "performer_mnist": (
        "Performer (absolute learnable sinusoids), dim 32, depth 3, 8 heads, m 16, MNIST, the "
        "small preset; test accuracy 0.9142: the baseline that collapses when digits move."
    ),
    "relative_performer_exact_mnist": (
        "RelativePerformer with the exact positional factor, dim 32, depth 3, 8 heads, m 4, "
        "MNIST; test accuracy 0.9883 (paper: 0.988), ≥ 0.99× its s = 0 accuracy at every "
        "shift in [−6, 6]."
    ),
}
"""The shipped, trained models by name, each with a one-line description; load one with
`ImageClassifier.from_preset(name)`."""
MODEL_FILE = "model.keras"
_CHECKOUT_PRESETS = os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "saved_models"
)


def preset_dirs():
    """Where preset names are looked up, in order."""
    listed = os.environ.get("RELPERF_PRESETS_DIR", "")
    return [path for path in listed.split(os.pathsep) if path] + [_CHECKOUT_PRESETS]


def model_file(preset):
    """The `.keras` file of `preset` (a name in `PRESETS` or a path)."""
    return model_file_in(preset, preset_dirs())


def model_file_in(preset, directories):
    """The `.keras` file of `preset`, a name looked up under `directories`, or a path."""
    if os.path.isfile(preset):
        return preset
    if os.path.isdir(preset):
        return os.path.join(preset, MODEL_FILE)
    if preset not in PRESETS:
        raise ValueError(
            f"preset={preset!r} is not allowed; use one of {tuple(PRESETS)} or a path to a "
            "preset folder or .keras file."
        )
    for directory in directories:
        path = os.path.join(directory, preset, MODEL_FILE)
        if os.path.isfile(path):
            return path
    raise FileNotFoundError(
        f"preset {preset!r}: no {MODEL_FILE} under {list(directories)}; set RELPERF_PRESETS_DIR "
        "to the folder holding the preset folders (a source checkout's saved_models/)."
    )


def load(preset, cls=None, **kwargs):
    """The model of `preset` (`keras.saving.load_model` kwargs pass through).

    With `cls` a task class, the model must be one (ValueError otherwise);
    with `PerformerBackbone`, the preset task's backbone is returned.
    """
    model = keras.saving.load_model(model_file(preset), **kwargs)
    if cls is None or isinstance(model, cls):
        return model
    backbone = getattr(model, "backbone", None)
    if backbone is not None and isinstance(backbone, cls):
        return backbone
    raise ValueError(
        f"preset={preset!r} is a {type(model).__name__}, not a {cls.__name__}; load it with "
        f"{type(model).__name__}.from_preset."
    )
