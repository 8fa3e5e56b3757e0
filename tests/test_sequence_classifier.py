"""The sequence task: four models over 1-D token sequences, masks, causal, any length."""

import csv
import dataclasses
import os

import keras
import numpy as np
import pytest

from relperf_tf.app import canvas_shift, training
from relperf_tf.models import build_sequence_model
from relperf_tf.models.position_strategies import sequence_rotations
from tests.conftest import run_script

TINY = dict(dim=8, depth=2, heads=2, nb_features=4, feature_redraw_interval=0)
MODELS = [
    ("Performer", {}),
    ("NoposPerformer", {}),
    ("RelativePerformer", dict(position_kernel="exact", locality=3.0)),
    ("RelativePerformer", dict(position_kernel="circular")),
    ("RelativePerformer", {}),
    ("ClippedRelativePerformer", dict(clipping_dist=3)),
]


def sequences(count=3, length=30, seed=0):
    return np.random.default_rng(seed).random((count, length, 1)).astype("float32")


def build(name, length=30, causal=False, **options):
    keras.utils.set_random_seed(0)
    return build_sequence_model(
        name, channels=1, num_classes=4, max_length=length, causal=causal, **TINY, **options
    )


def logits(model, pixels, mask=None):
    mask = np.ones(pixels.shape[:2], bool) if mask is None else mask
    return np.array(model({"pixels": pixels, "padding_mask": mask}))


@pytest.mark.parametrize("name, options", MODELS)
def test_every_model_runs_at_other_lengths_and_round_trips(tmp_path, name, options):
    model = build(name, **options)
    for length in (30, 17, 45):
        assert logits(model, sequences(length=length)).shape == (3, 4)
    path = str(tmp_path / "model.keras")
    model.save(path)
    reloaded = keras.models.load_model(path)
    np.testing.assert_allclose(logits(reloaded, sequences()), logits(model, sequences()), atol=1e-6)


@pytest.mark.parametrize(
    "name, options, causal, invariant",
    [
        ("RelativePerformer", dict(position_kernel="exact", locality=3.0), False, True),
        ("RelativePerformer", dict(position_kernel="exact"), True, True),
        ("NoposPerformer", {}, True, True),
        ("ClippedRelativePerformer", dict(clipping_dist=3), False, True),
        ("Performer", {}, False, False),
    ],
)
def test_a_sequence_anywhere_in_a_masked_canvas(name, options, causal, invariant):
    """Exact relative positions with a mask: the same logits at every offset; absolute: not."""
    model = build(name, causal=causal, **options)
    pixels = sequences()
    inputs = [canvas_shift.place(pixels, offset, 48) for offset in (0, 5, 18)]
    outputs = [logits(model, x["pixels"], x["padding_mask"]) for x in inputs]
    changes = [np.abs(out - outputs[0]).max() for out in outputs[1:]]
    if invariant:
        assert max(changes) < 1e-5, changes
    else:
        assert max(changes) > 1e-3, changes


def test_causal_model_output_depends_on_the_whole_sequence_through_the_pool():
    """Causal attention, masked mean: changing the last token changes only its own path."""
    model = build("RelativePerformer", causal=True, position_kernel="exact")
    pixels = sequences()
    blocks_out = model.backbone  # the last block's tokens
    changed = pixels.copy()
    changed[:, -1] = 0.9
    mask = np.ones(pixels.shape[:2], bool)
    base = np.array(blocks_out({"pixels": pixels, "padding_mask": mask}))
    out = np.array(blocks_out({"pixels": changed, "padding_mask": mask}))
    np.testing.assert_allclose(out[:, :-1], base[:, :-1], atol=1e-5)


def test_locality_prior_peaks_at_each_heads_offset():
    frequencies = np.array([1.0, 0.3, 0.1])
    alpha, beta = sequence_rotations(4, frequencies, 2.0)
    offsets = np.arange(-5, 6)
    profile = (
        np.cos(offsets[:, None] * frequencies) @ alpha.T
        + np.sin(offsets[:, None] * frequencies) @ beta.T
    )  # [offsets, heads]
    assert list(offsets[profile.argmax(0)]) == [1, -1, 2, -2]


def test_sequence_run_and_its_shift_test_end_to_end(tmp_path, fashion_mnist_dir):
    """--layout=sequence --causal trains on the 784-token sequences; sequence_shift.py writes the
    shift and length rows, and the exact model's logits do not move."""
    config = training.resolve_config(
        "RelativePerformer",
        "fashion_mnist",
        layout="sequence",
        causal=True,
        position_kernel="exact",
        log_dir=str(tmp_path / "logs"),
        data_dir=fashion_mnist_dir,
        **TINY,
        batch_size=8,
        epochs=1,
        steps_per_epoch=2,
        seed=0,
        verbose=0,
    )
    # The real pipelines, validation and test cut to 4 batches (the full passes took a minute).
    splits = training.load_splits(config)
    splits = dataclasses.replace(
        splits, validation=splits.validation.take(4), test=splits.test.take(4)
    )
    run_dir = training.train(config, splits)["run_dir"]
    output = str(tmp_path / "sequence_shift.csv")
    result = run_script(
        "sequence_shift.py",
        [run_dir, "--count=16", "--max_offset=16", "--length_factors=1,1.5", f"--output={output}"],
        env=dict(os.environ, TFDS_DATA_DIR=fashion_mnist_dir),
    )
    assert result.returncode == 0, result.stderr[-2000:]
    with open(output) as f:
        rows = list(csv.DictReader(f))
    assert [(r["test"], r["offset"], r["canvas_length"]) for r in rows] == [
        ("shift", "0", "800"),
        ("shift", "8", "800"),
        ("shift", "16", "800"),
        ("length", "0", "784"),
        ("length", "0", "1176"),
    ]
    assert max(float(r["max_logit_change"]) for r in rows) < 1e-4
    bad = run_script("sequence_shift.py", [run_dir, "--max_offset=-1", f"--output={output}2"])
    assert bad.returncode == 2 and "--max_offset=-1" in bad.stderr
    assert not os.path.exists(output + "2")
