"""The four models: shapes, overfitting a batch, save/load, config, bad input."""

import itertools

import keras
import numpy as np
import pytest

from relperf_tf import MODEL_NAMES, build_model
from relperf_tf.models import PerformerClassifier

TINY = dict(dim=24, depth=1, heads=2, attn_dropout=0.0, ff_dropout=0.0, pos_scales=2, clipping_dist=2, nb_features=8, seed=3)


def batch(channels, embedding_type, size=4, count=8):
    """A learnable fixed batch: the label sets the brightness, noise the rest."""
    rng = np.random.default_rng(channels)
    labels = np.arange(count) % 4
    values = 0.5 * rng.random((count, size, size, channels)) + 0.15 * labels[:, None, None, None]
    images = np.round(values * 255).astype("uint8")
    return (images if embedding_type == "lookup" else (images / 255).astype("float32")), labels


@pytest.mark.parametrize(
    "name,channels,embedding_type",
    list(itertools.product(MODEL_NAMES, (1, 3), ("linear", "MLP", "lookup"))),
)
def test_model_overfits_saves_and_reloads(tmp_path, name, channels, embedding_type):
    keras.utils.set_random_seed(0)
    images, labels = batch(channels, embedding_type)
    model = build_model(name, image_shape=images.shape[1:], num_classes=4, embedding_type=embedding_type, **TINY)
    assert tuple(model(images).shape) == (8, 4)

    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    history = model.fit(images, labels, batch_size=8, epochs=30, verbose=0, shuffle=False)
    losses = history.history["loss"]
    assert losses[-1] <= 0.5 * losses[0], f"loss {losses[0]:.3f} -> {losses[-1]:.3f}"

    path = str(tmp_path / "model.keras")
    model.save(path)
    reloaded = keras.models.load_model(path)
    np.testing.assert_allclose(reloaded.predict(images, verbose=0), model.predict(images, verbose=0), atol=1e-6)

    clone = PerformerClassifier.from_config(model.get_config())
    assert clone.get_config() == model.get_config()


def test_reference_parameter_counts():
    counts = {}
    for name in MODEL_NAMES:
        model = build_model(name, image_shape=(32, 32, 1), num_classes=10)
        counts[name] = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    print("trainable parameters at the reference config:", counts)
    # Original PyTorch Performer: 794 K (793 K blocks + embedding, head, 32 frequencies).
    assert abs(counts["Performer"] - 794_000) < 1_000
    assert counts["NoposPerformer"] < counts["Performer"]


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(name="Transformer"), "model='Transformer'"),
        (dict(dim=10, heads=4), "dim=10 is not divisible by heads=4"),
        (dict(embedding_type="lookup", dim=8, image_shape=(4, 4, 3)), "dim=8 is not divisible by channels=3"),
        (dict(name="RelativePerformer", pos_scales=0), "pos_scales=0"),
        (dict(name="ClippedRelativePerformer", clipping_dist=0), "clipping_dist=0"),
        (dict(nb_features=0), "nb_features=0"),
        (dict(image_shape=(4, 4)), r"image_shape=\(4, 4\)"),
        (dict(embedding_type="conv"), "embedding_type='conv'"),
        (dict(kernel="cosine"), "kernel='cosine'"),
        (dict(attn_dropout=-0.1), "attn_dropout=-0.1"),
        (dict(colour=True), "unknown hyperparameters"),
    ],
)
def test_bad_hyperparameters_name_the_parameter(kwargs, message):
    args = dict(name="Performer", image_shape=(4, 4, 1), num_classes=3)
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        build_model(args.pop("name"), **args)


def test_images_of_wrong_rank_are_rejected():
    model = build_model("NoposPerformer", image_shape=(4, 4, 1), num_classes=3, **TINY)
    with pytest.raises(ValueError, match="rank 3"):
        model(np.zeros((4, 4, 1), "float32"))
