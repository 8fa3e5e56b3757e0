"""The backbone and its position strategies: one registry, tasks built on it, a new strategy end
to end, errors that name the argument."""

import keras
import numpy as np
import pytest

from relperf_tf.models import (
    MODEL_NAMES,
    POSITION_STRATEGIES,
    ImageClassifier,
    PerformerBackbone,
    SequenceClassifier,
    position_strategies,
)

pytestmark = pytest.mark.all_backends

SMALL = dict(dim=8, depth=2, heads=2, nb_features=4)


def test_every_model_name_is_one_registered_strategy():
    assert MODEL_NAMES == tuple(s.model_name for s in POSITION_STRATEGIES.values())[:5]
    assert "learned" in POSITION_STRATEGIES
    with pytest.raises(ValueError, match="position_encoding='rotary' is not allowed"):
        PerformerBackbone(1, "rotary", **SMALL)


@pytest.mark.parametrize("encoding", ["absolute", "none", "relative", "clipped", "learned"])
def test_backbone_features_feed_both_tasks(encoding, tmp_path):
    grid = PerformerBackbone(1, encoding, grid_shape=(3, 4), class_token=True, **SMALL)
    features = grid({"pixels": np.zeros((2, 12, 1), "float32")})
    assert tuple(features.shape) == (2, 13, 8)
    image = ImageClassifier(grid, 5)
    images = np.random.default_rng(0).random((2, 3, 4, 1)).astype("float32")
    # The task's graph is the backbone's layers on its own inputs: the same class-token feature.
    token = grid.class_token_index()
    head = image.head(np.array(grid({"pixels": images.reshape(2, 12, 1)}))[:, token])
    np.testing.assert_allclose(np.array(image(images)), np.array(head), atol=1e-5)
    image.save(tmp_path / "image.keras")
    reloaded = keras.models.load_model(tmp_path / "image.keras")
    # (predict is compiled, the call eager: float32 rounding differs by ~1e-6 on JAX)
    np.testing.assert_allclose(reloaded.predict(images, verbose=0), image(images), atol=1e-5)

    line = PerformerBackbone(1, encoding, max_length=20, **SMALL)
    sequence = SequenceClassifier(line, 5)
    inputs = {"pixels": np.zeros((2, 20, 1)), "padding_mask": np.ones((2, 20), bool)}
    assert tuple(sequence(inputs).shape) == (2, 5)


@pytest.mark.tensorflow_only
def test_the_learned_strategy_end_to_end(tmp_path):
    """LearnedPositionPerformer: one registry entry → model name, flag choice, CLI run config,
    a table per grid token that is not shift equivariant."""
    from relperf_tf.app import training

    config = training.resolve_config("LearnedPositionPerformer", "mnist", seed=0, **SMALL)
    model = training.build_compiled_model(config, training.make_strategy("default"))
    assert model.positions.table.shape == (32 * 32, 8)
    images = np.zeros((2, 32, 32, 1), "float32")
    images[:, 10:14, 10:14] = 1.0
    moved = np.roll(images, 3, axis=2)
    assert np.abs(np.array(model(images)) - np.array(model(moved))).max() > 1e-4
    line = PerformerBackbone(1, "learned", max_length=10, **SMALL)
    with pytest.raises(ValueError, match="11 tokens are not allowed"):
        line.positions.build((None, 11, 8))


def test_a_strategy_registered_elsewhere_builds_backbones():
    class SecondStrategy(position_strategies.PositionStrategy):
        name = "test_none"
        model_name = "TestNopos"

    position_strategies.register(SecondStrategy())
    try:
        backbone = PerformerBackbone(1, "test_none", grid_shape=(2, 2), **SMALL)
        assert tuple(backbone({"pixels": np.zeros((1, 4, 1))}).shape) == (1, 4, 8)
    finally:
        del POSITION_STRATEGIES["test_none"]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(heads=3), r"dim=8 is not divisible by heads=3"),
        (dict(position_encoding="clipped", heads=1, dim=8), "num_heads=1 is not allowed"),
        (dict(grid_shape=(3,)), r"grid_shape=\(3,\) is not allowed"),
        (dict(grid_shape=(2, 2), causal=True), "causal=True is not allowed with a grid_shape"),
        (dict(position_encoding="clipped", causal=True), "causal=True is not allowed"),
        (dict(position_encoding="absolute", dim=6, heads=2), "dim=6 is not allowed"),
        (dict(colour=1), "unknown hyperparameters"),
    ],
)
def test_backbone_errors_name_its_argument(kwargs, message):
    arguments = dict(SMALL, position_encoding="none")
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=message):
        PerformerBackbone(1, **arguments)


def test_tasks_reject_a_backbone_of_the_other_kind():
    line = PerformerBackbone(1, "none", **SMALL)
    grid = PerformerBackbone(1, "none", grid_shape=(2, 2), class_token=True, **SMALL)
    with pytest.raises(ValueError, match="ImageClassifier needs a PerformerBackbone with a grid"):
        ImageClassifier(line, 3)
    with pytest.raises(ValueError, match="SequenceClassifier needs a 1-D PerformerBackbone"):
        SequenceClassifier(grid, 3)
