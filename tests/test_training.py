"""Training library: schedules, optimizer, config resolution, resumable callbacks, NaN."""

import csv
import dataclasses
import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from relperf_tf.app import data, training
from relperf_tf.schedules import WarmupSchedule

TINY = dict(
    dim=8,
    depth=1,
    heads=2,
    nb_features=4,
    batch_size=8,
    attn_dropout=0.0,
    ff_dropout=0.0,
    verbose=0,
)


def test_schedules():
    constant = WarmupSchedule(1e-3, "constant", warmup=10)
    assert float(constant(0)) == pytest.approx(1e-4)
    assert float(constant(500)) == pytest.approx(1e-3)
    noam = WarmupSchedule(1e-3, "noam", warmup=100)
    assert float(noam(49)) == pytest.approx(0.5e-3)
    assert float(noam(399)) == pytest.approx(1e-3 * np.sqrt(100 / 400))
    assert float(WarmupSchedule(1e-3)(7)) == pytest.approx(1e-3)


def test_optimizer_recipe():
    optimizer = training.make_optimizer(1e-3)
    assert (optimizer.beta_1, optimizer.beta_2, optimizer.global_clipnorm) == (0.9, 0.98, 0.5)


def test_preset_then_explicit_flags():
    config = training.resolve_config("RelativePerformer", "fashion_mnist", "paper", heads=4)
    assert (config.dim, config.depth, config.heads, config.batch_size) == (256, 6, 4, 22)


@pytest.mark.parametrize(
    "overrides,flag",
    [
        (dict(batch_size=0), "--batch_size=0"),
        (dict(attn_dropout=-0.1), "--attn_dropout=-0.1"),
        (dict(ff_dropout=-1.0), "--ff_dropout=-1.0"),
        (dict(learning_rate=-1.0), "--learning_rate=-1.0"),
        (dict(dim=10, heads=4), "--dim=10 is not divisible by --heads=4"),
        (dict(schedule="cosine"), "--schedule='cosine'"),
        (dict(schedule="noam", warmup=0), "--warmup=0"),
        (dict(embedding_type="lookup", dim=8), None),
        (dict(strategy="tpu"), "--strategy='tpu'"),
    ],
)
def test_bad_settings_name_the_flag(overrides, flag):
    if flag is None:  # a valid combination
        training.resolve_config("Performer", "mnist", **overrides)
        return
    with pytest.raises(ValueError, match=flag.replace("(", r"\(")):
        training.resolve_config("Performer", "mnist", **overrides)


def test_unknown_model_and_dataset():
    with pytest.raises(ValueError, match="--model='Transformer'.*Performer"):
        training.resolve_config("Transformer", "mnist")
    with pytest.raises(ValueError, match="--dataset='svhn'"):
        training.resolve_config("Performer", "svhn")


def test_next_version(tmp_path):
    assert training.next_version(str(tmp_path / "none")) == "version_0"
    for name in ("version_0", "version_3", "other"):
        (tmp_path / name).mkdir()
    assert training.next_version(str(tmp_path)) == "version_4"


def test_nan_loss_stops_keeps_last_good_checkpoint(tmp_path):
    """Epoch 0 is clean, epoch 1 meets NaN pixels: stop, raise, best.keras stays good."""
    rng = np.random.default_rng(0)
    good = rng.random((16, 32, 32, 1)).astype("float32")
    bad = np.full((16, 32, 32, 1), np.nan, "float32")
    labels = np.arange(32) % 10
    train = tf.data.Dataset.from_tensor_slices((np.concatenate([good, bad]), labels)).batch(8)
    valid = tf.data.Dataset.from_tensor_slices((good, labels[:16])).batch(8)
    splits = data.Splits(train=train, validation=valid, test=valid, spec=data.DATASETS["mnist"])
    config = training.resolve_config(
        "NoposPerformer",
        "mnist",
        log_dir=str(tmp_path),
        epochs=3,
        steps_per_epoch=2,
        seed=0,
        **TINY,
    )
    with pytest.raises(training.TrainingDivergedError, match="NaN"):
        training.train(config, splits)
    run_dir = tmp_path / "default" / "version_0"
    best = keras.models.load_model(run_dir / "checkpoints" / "best.keras")
    assert all(np.all(np.isfinite(keras.ops.convert_to_numpy(w))) for w in best.weights)
    assert not (run_dir / "test_metrics.json").exists()


def test_mirrored_training_keeps_replicas_identical(tmp_path):
    strategy = training.make_strategy("mirrored", cpu_replicas=2)
    assert strategy.num_replicas_in_sync == 2
    config = training.resolve_config(
        "RelativePerformer", "mnist", feature_redraw_interval=2, seed=0, **TINY
    )
    model = training.build_compiled_model(config, strategy)
    images = np.random.default_rng(1).random((48, 32, 32, 1)).astype("float32")
    model.fit(images, np.arange(48) % 10, batch_size=8, epochs=1, verbose=0)
    for weight in model.weights:
        replicas = [
            keras.ops.convert_to_numpy(v) for v in strategy.experimental_local_results(weight.value)
        ]
        assert len(replicas) == 2
        np.testing.assert_array_equal(replicas[0], replicas[1], err_msg=weight.path)


def test_metrics_csv_drops_rows_after_the_restored_epoch(tmp_path):
    from relperf_tf.app.callbacks import COLUMNS, MetricsCSVLogger

    path = str(tmp_path / "metrics.csv")
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        for epoch in range(3):
            writer.writerow(
                {
                    "epoch": epoch,
                    "loss": 1.0,
                    "accuracy": 0.5,
                    "val_loss": 1.0,
                    "val_accuracy": 0.5,
                    "learning_rate": 1e-3,
                }
            )
    logger = MetricsCSVLogger(path)
    model = keras.Sequential([keras.layers.Dense(1)])
    model._initial_epoch = 2  # what BackupAndRestore sets when resuming at epoch 2
    logger.set_model(model)
    logger.on_train_begin()
    with open(path) as f:
        assert [row["epoch"] for row in csv.DictReader(f)] == ["0", "1"]
    assert json.dumps(logger.rows)


def test_cosine_schedule_warms_up_then_decays_to_zero():
    from relperf_tf.schedules import WarmupSchedule

    schedule = WarmupSchedule(1e-3, "cosine", warmup=10, total_steps=110)
    values = [float(schedule(step - 1)) for step in (5, 10, 60, 110, 200)]
    np.testing.assert_allclose(values, [5e-4, 1e-3, 5e-4, 0.0, 0.0], atol=1e-9)
    config = training.resolve_config(
        "Performer", "mnist", schedule="cosine", epochs=2, steps_per_epoch=50, warmup=10
    )
    optimizer = training.make_optimizer(1e-3, "cosine", 10, 100)
    assert optimizer.get_config()["learning_rate"]["config"]["total_steps"] == 100
    assert config.schedule == "cosine"
    with pytest.raises(ValueError, match="flag --schedule='cosine' is not allowed with"):
        training.resolve_config("Performer", "mnist", schedule="cosine")
    with pytest.raises(ValueError, match="flag --augment_shift=4 is not allowed with --layout"):
        training.resolve_config("Performer", "mnist", augment_shift=4, layout="sequence")


def test_init_from_starts_a_circular_run_from_an_exact_runs_weights(tmp_path):
    """`--init_from`: the exact kernel's trained weights load into a circular model (same
    weights, another positional factor); the source's outputs come back with its kernel."""
    images = np.random.default_rng(2).random((16, 32, 32, 1)).astype("float32")
    source = training.resolve_config(
        "RelativePerformer", "mnist", position_kernel="exact", seed=3, **TINY
    )
    trained = training.build_compiled_model(source, tf.distribute.get_strategy())
    trained.fit(images, np.arange(16) % 10, batch_size=8, epochs=1, verbose=0)
    path = str(tmp_path / "source.keras")
    trained.save(path)
    again = training.build_compiled_model(
        training.resolve_config(
            "RelativePerformer", "mnist", position_kernel="exact", seed=9, init_from=path, **TINY
        ),
        tf.distribute.get_strategy(),
    )
    np.testing.assert_allclose(again.predict(images, verbose=0), trained.predict(images, verbose=0))
    circular = training.build_compiled_model(
        training.resolve_config(
            "RelativePerformer", "mnist", position_kernel="circular", init_from=path, **TINY
        ),
        tf.distribute.get_strategy(),
    )
    for got, want in zip(circular.weights, trained.weights):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(got), want.numpy())


def test_init_from_deepens_a_shallower_run_into_identity_blocks(tmp_path):
    """`--init_from` a run with fewer blocks: its blocks keep their order (the last stays
    last), each added block starts as the identity, so the deeper model predicts the same."""
    images = np.random.default_rng(4).random((8, 32, 32, 1)).astype("float32")
    source = training.build_compiled_model(
        training.resolve_config(
            "RelativePerformer", "mnist", position_kernel="exact", seed=1, **dict(TINY, depth=2)
        ),
        tf.distribute.get_strategy(),
    )
    path = str(tmp_path / "source.keras")
    source.save(path)
    deeper = training.build_compiled_model(
        training.resolve_config(
            "RelativePerformer",
            "mnist",
            position_kernel="exact",
            seed=2,
            init_from=path,
            **dict(TINY, depth=3),
        ),
        tf.distribute.get_strategy(),
    )
    np.testing.assert_allclose(
        deeper.predict(images, verbose=0), source.predict(images, verbose=0), atol=1e-6
    )
    weights = {w.path: keras.ops.convert_to_numpy(w) for w in deeper.weights}
    for w in source.weights:
        moved = w.path.replace("block_1/", "block_2/")
        np.testing.assert_array_equal(weights[moved], w.numpy())
    for name in (
        "attention/attention_output/kernel",
        "attention/attention_output/bias",
        "ff_output/kernel",
    ):
        assert not np.any(weights[f"block_1/{name}"]), name
    assert np.any(weights["block_1/attention/query/kernel"])  # fresh, not zeroed
    too_deep = training.resolve_config(
        "RelativePerformer",
        "mnist",
        position_kernel="exact",
        init_from=path,
        **dict(TINY, depth=4),
    )
    with pytest.raises(ValueError, match=r"--init_from=.*at most 3, not 4; use --depth <= 3"):
        training.build_compiled_model(too_deep, tf.distribute.get_strategy())


def test_init_from_rejects_a_missing_source_and_another_model(tmp_path):
    with pytest.raises(ValueError, match=r"--init_from='nowhere' is not allowed.*\.keras file"):
        training.resolve_config("Performer", "mnist", init_from="nowhere")
    empty_run = tmp_path / "run"
    empty_run.mkdir()
    with pytest.raises(ValueError, match="--init_from=.*checkpoints/best.keras"):
        training.resolve_config("Performer", "mnist", init_from=str(empty_run))
    nopos = training.build_compiled_model(
        training.resolve_config("NoposPerformer", "mnist", seed=0, **TINY),
        tf.distribute.get_strategy(),
    )
    path = str(tmp_path / "nopos.keras")
    nopos.save(path)
    wider = training.resolve_config("NoposPerformer", "mnist", init_from=path, **dict(TINY, dim=16))
    with pytest.raises(ValueError, match=r"--init_from=.*does not fit this model"):
        training.build_compiled_model(wider, tf.distribute.get_strategy())


def test_label_smoothing_loss_matches_numpy():
    """The smoothed loss is the cross-entropy against (1 − ε)·onehot + ε/K, per example and
    averaged; ε = 0 is Keras' sparse cross-entropy."""
    from relperf_tf.app.losses import make_loss

    rng = np.random.default_rng(1)
    logits = rng.normal(size=(6, 5)).astype("float32")
    labels = np.array([0, 4, 2, 2, 1, 3])
    log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    targets = 0.8 * np.eye(5)[labels] + 0.2 / 5
    want = -(targets * log_p).sum(-1)
    per_example = make_loss(0.2, reduction=None)(labels, logits)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(per_example), want, rtol=1e-5)
    np.testing.assert_allclose(float(make_loss(0.2)(labels, logits)), want.mean(), rtol=1e-5)
    plain = -log_p[np.arange(6), labels].mean()
    np.testing.assert_allclose(float(make_loss(0.0)(labels, logits)), plain, rtol=1e-5)
    config = training.resolve_config("Performer", "mnist", label_smoothing=0.1, **TINY)
    model = training.build_compiled_model(config, tf.distribute.get_strategy())
    assert model.loss.label_smoothing == 0.1


@pytest.mark.parametrize(
    "overrides,message",
    [
        (
            dict(label_smoothing=1.0),
            r"flag --label_smoothing=1.0 is not allowed; use a number in \[0",
        ),
        (dict(label_smoothing=-0.1), "flag --label_smoothing=-0.1 is not allowed"),
        (dict(augment_flip=True, layout="sequence"), "flag --augment_flip=True is not allowed"),
    ],
)
def test_bad_augmentation_and_smoothing_settings_name_the_flag(overrides, message):
    with pytest.raises(ValueError, match=message):
        training.resolve_config("Performer", "mnist", **overrides)


def test_ema_momentum_validates_checkpoints_and_keeps_the_moving_average():
    """With --ema_momentum μ the optimizer keeps w̄ ← μ·w̄ + (1 − μ)·w after every step (w̄ = w
    after the first); at each epoch's end the model holds w̄ (what is validated and what
    BestCheckpoint saves), the next epoch trains on from the trained weights, and fit ends on w̄."""
    mu = 0.6
    config = training.resolve_config(
        "NoposPerformer", "mnist", ema_momentum=mu, learning_rate=1e-2, seed=0, **TINY
    )
    model = training.build_compiled_model(config, tf.distribute.get_strategy())
    rng = np.random.default_rng(2)
    images = rng.random((24, 32, 32, 1)).astype("float32")
    labels = np.arange(24) % 10

    def trainable():
        return [keras.ops.convert_to_numpy(w).copy() for w in model.trainable_weights]

    steps, at_epoch_end, at_epoch_begin = [], [], []
    record = keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda batch, logs: steps.append(trainable()),
        on_epoch_end=lambda epoch, logs: at_epoch_end.append(trainable()),
        on_epoch_begin=lambda epoch, logs: at_epoch_begin.append(trainable()),
    )
    history = model.fit(
        images,
        labels,
        batch_size=8,
        epochs=2,
        validation_data=(images[:8], labels[:8]),
        callbacks=[*training.ema_callbacks(config), record],
        verbose=0,
    )
    averages = [steps[0]]
    for weights in steps[1:]:
        averages.append([mu * a + (1 - mu) * w for a, w in zip(averages[-1], weights)])

    def close(got, want):
        for g, w in zip(got, want, strict=True):
            np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)

    assert len(steps) == 6
    close(at_epoch_end[0], averages[2])
    close(at_epoch_begin[1], steps[2])  # swapped back: training goes on from w, not w̄
    close(at_epoch_end[1], averages[5])
    close(trainable(), averages[5])
    assert not np.allclose(averages[5][0], steps[5][0])
    check = training.build_compiled_model(config, tf.distribute.get_strategy())
    check.set_weights(model.get_weights())
    val_loss = check.evaluate(images[:8], labels[:8], verbose=0)[0]
    assert history.history["val_loss"][1] == pytest.approx(val_loss, rel=1e-5)
    assert not training.ema_callbacks(dataclasses.replace(config, ema_momentum=0.0))


@pytest.mark.parametrize("value", [1.0, -0.5])
def test_bad_ema_momentum_names_the_flag(value):
    with pytest.raises(ValueError, match=rf"flag --ema_momentum={value} is not allowed; use a"):
        training.resolve_config("Performer", "mnist", ema_momentum=value)
