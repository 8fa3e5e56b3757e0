"""Finding finished runs and loading what they saved."""

import json
import os

import keras

from relperf_tf import data as data_lib


def find_runs(paths):
    """Run directories (holding `hparams.json` and `checkpoints/best.keras`) under `paths`, sorted."""
    runs = set()
    for path in paths:
        if not os.path.isdir(path):
            raise ValueError(f"RUN_DIR {path!r} is not a directory.")
        for root, _, files in os.walk(path):
            if "hparams.json" in files and os.path.exists(os.path.join(root, "checkpoints", "best.keras")):
                runs.add(os.path.abspath(root))
    if not runs:
        raise ValueError(f"no finished runs (hparams.json + checkpoints/best.keras) under {list(paths)}.")
    return sorted(runs)


def load_hparams(run_dir):
    with open(os.path.join(run_dir, "hparams.json")) as f:
        return json.load(f)


def load_best_model(run_dir):
    return keras.models.load_model(os.path.join(run_dir, "checkpoints", "best.keras"))


def test_pipeline(hparams, data_dir=None, batch_size=256):
    """The test split as the run's model saw its data."""
    splits = data_lib.load(hparams["dataset"], batch_size, hparams["embedding_type"], 0, data_dir or hparams.get("data_dir"))
    return splits.test
