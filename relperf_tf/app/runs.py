"""Finding finished runs and loading what they saved."""

import json
import os

import keras

from relperf_tf.app import data as data_lib


def find_runs(paths):
    """Run directories (with `hparams.json` and `checkpoints/best.keras`) under `paths`, sorted."""
    runs = set()
    for path in paths:
        if not os.path.isdir(path):
            raise ValueError(f"RUN_DIR {path!r} is not a directory.")
        for root, _, files in os.walk(path):
            if "hparams.json" in files and os.path.exists(
                os.path.join(root, "checkpoints", "best.keras")
            ):
                runs.add(os.path.abspath(root))
    if not runs:
        raise ValueError(
            f"no finished runs (hparams.json + checkpoints/best.keras) under {list(paths)}."
        )
    return sorted(runs)


def load_hparams(run_dir):
    with open(os.path.join(run_dir, "hparams.json")) as f:
        return json.load(f)


# Settings a checkpoint must share with its run's hparams.json, per model.
_IDENTITY = ("dim", "depth", "heads")
_MODEL_IDENTITY = {
    "RelativePerformer": ("position_kernel",),
    "ClippedRelativePerformer": ("clipping_dist",),
}


def load_best_model(run_dir, hparams=None):
    """The run's `checkpoints/best.keras`, checked against its `hparams.json`.

    Loading keeps Keras' `safe_mode` (no deserialised Python code). Raises
    ValueError naming the file when it is missing, unreadable, or holds
    another model than the one `hparams` describe (e.g. a copied file).
    """
    path = os.path.join(run_dir, "checkpoints", "best.keras")
    if not os.path.isfile(path):
        raise ValueError(
            f"RUN_DIR {run_dir!r} has no checkpoints/best.keras (an unfinished run, or not a run "
            "directory)."
        )
    try:
        model = keras.models.load_model(path, safe_mode=True)
    except Exception as error:  # zip, HDF5 and deserialisation errors alike
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(
            f"{path} cannot be loaded ({reason[:200]}); retrain or restore the file."
        ) from None
    hparams = hparams if hparams is not None else load_hparams(run_dir)
    config = dict(model.arguments(), model=model.name)
    keys = ("model",) + _IDENTITY + _MODEL_IDENTITY.get(hparams.get("model"), ())
    expected = {k: hparams.get(k) for k in keys if k in hparams}
    found = {k: config.get(k) for k in expected}
    if found != expected:
        differ = ", ".join(
            f"{k}={found.get(k)!r} (hparams.json: {expected.get(k)!r})"
            for k in expected
            if found.get(k) != expected.get(k)
        )
        raise ValueError(
            f"{path} holds another model than its run's hparams.json describes: {differ}."
        )
    return model


def test_pipeline(hparams, data_dir=None, batch_size=256):
    """The test split as the run's model saw its data."""
    splits = data_lib.load(
        hparams["dataset"],
        batch_size,
        hparams["embedding_type"],
        0,
        data_dir or hparams.get("data_dir"),
        layout=hparams.get("layout", "image"),
    )
    return splits.test
