"""Keras Tuner searches: space validity, 2-trial random search, hyperband, resume, bad input."""

import csv
import json
import os
import subprocess
import sys

import keras
import keras_tuner as kt
import pytest

from relperf_tf import MODEL_NAMES, build_model
from relperf_tf.app import data, tuning
from tests.conftest import REPO

TUNE = os.path.join(REPO, "scripts", "tune.py")


@pytest.mark.parametrize("model", MODEL_NAMES)
def test_search_space_never_proposes_invalid_pairs(model):
    hypermodel = tuning.PerformerHyperModel(
        tuning.training.resolve_config(model, "cifar10"),
        lambda e: None,
        dims=(32, 48, 64),
        heads=(2, 3, 4, 8),
    )
    hp = kt.HyperParameters()
    hypermodel.trial_config(hp)  # declares the space
    choices = next(p for p in hp.space if p.name == "dim_heads").values
    assert "32x3" not in choices and "64x3" not in choices and "48x8" in choices
    for value in choices:
        hp.values["dim_heads"] = value
        config = hypermodel.trial_config(hp)
        assert config.dim % config.heads == 0
        assert model != "ClippedRelativePerformer" or config.heads % 2 == 0
    # cifar10 has 3 channels: lookup is offered only when every dim is divisible by 3.
    assert "lookup" not in next(p for p in hp.space if p.name == "embedding_type").values


def test_no_valid_pair_is_an_error():
    with pytest.raises(ValueError, match="no valid dim/heads pair"):
        tuning.valid_dim_heads("Performer", dims=(10,), heads=(4, 3))


def tune(args, **kwargs):
    return subprocess.run([sys.executable, TUNE] + args, capture_output=True, text=True, **kwargs)


@pytest.fixture(scope="module")
def small_splits(fashion_mnist_dir):
    """Real Fashion-MNIST, cut to a few batches so each trial takes seconds."""

    def load(embedding_type):
        splits = data.load("fashion_mnist", 32, embedding_type, 0, fashion_mnist_dir)
        return data.Splits(
            splits.train.take(4), splits.validation.take(2), splits.test.take(2), splits.spec
        )

    return load


def search(tmp_path, small_splits, tuner="random", max_trials=2, max_epochs=1, **kwargs):
    config = tuning.training.resolve_config(
        "RelativePerformer",
        "fashion_mnist",
        batch_size=32,
        steps_per_epoch=2,
        seed=0,
        patience=1,
        verbose=0,
    )
    return tuning.search(
        config,
        tuner,
        max_trials,
        max_epochs,
        str(tmp_path),
        "p",
        load_splits=small_splits,
        dims=(8, 16),
        heads=(1, 2, 4, 3),
        **kwargs,
    )


@pytest.mark.slow
def test_random_search_resumes_and_saves_best(tmp_path, small_splits):
    search(tmp_path, small_splits, export_dir=str(tmp_path / "export"))
    project = tmp_path / "p"
    rows = list(csv.DictReader(open(project / "trials.csv")))
    assert len(rows) == 2 and all(r["status"] == "COMPLETED" for r in rows)
    best = json.load(open(project / "best_hyperparameters.json"))
    config = best["config"]
    assert config["dim"] % config["heads"] == 0
    rebuilt = build_model(
        "RelativePerformer",
        image_shape=(32, 32, 1),
        num_classes=10,
        **{k: config[k] for k in (s.name for s in tuning.MODEL_SETTINGS)},
    )
    assert keras.models.load_model(project / "best.keras").count_params() == rebuilt.count_params()
    assert (tmp_path / "export" / "1" / "saved_model.pb").exists()
    trials = sorted(d for d in os.listdir(project) if d.startswith("trial_"))
    mtimes = {d: os.path.getmtime(project / d / "trial.json") for d in trials}

    search(tmp_path, small_splits)  # same command: resumes, runs nothing
    assert {d: os.path.getmtime(project / d / "trial.json") for d in trials} == mtimes
    search(tmp_path, small_splits, max_trials=3)  # one more trial only
    after = sorted(d for d in os.listdir(project) if d.startswith("trial_"))
    assert (
        len(after) == 3
        and {d: os.path.getmtime(project / d / "trial.json") for d in trials} == mtimes
    )


@pytest.mark.slow
def test_tiny_hyperband(tmp_path, small_splits):
    result = search(tmp_path, small_splits, tuner="hyperband", max_epochs=2)
    assert len(result["trials"]) >= 2
    assert (tmp_path / "p" / "best.keras").exists() and (
        tmp_path / "p" / "best_hyperparameters.json"
    ).exists()


@pytest.mark.parametrize(
    "args,message",
    [
        (["--tuner=grid"], "--tuner='grid'"),
        (["--max_trials=0"], "--max_trials=0"),
        (["--dims=10", "--head_counts=4,3"], "no valid dim/heads pair"),
        (["--model=Foo"], "--model='Foo'"),
        (["--precision=half"], "--precision='half'"),
    ],
)
def test_bad_input_writes_nothing(tmp_path, args, message):
    base = ["--model=Performer", "--dataset=fashion_mnist", f"--tuner_dir={tmp_path / 'tuning'}"]
    result = tune(base + args)
    assert result.returncode != 0 and message in result.stderr, result.stderr[-2000:]
    assert not (tmp_path / "tuning").exists()


def test_a_signal_in_a_trial_is_recorded_and_raised_between_batches_as_a_fatal_error():
    import copy
    import signal

    import keras_tuner

    from relperf_tf.app.callbacks import Interrupted
    from relperf_tf.app.tuning import StopTrialOnSignal, TrialInterrupted

    with StopTrialOnSignal() as stop:
        assert (
            copy.deepcopy(stop) is stop
        )  # Keras Tuner's per-trial copies share the recorded signal
        stop.check()  # nothing received: nothing raised
        signal.raise_signal(signal.SIGTERM)  # only recorded by the handler
        assert stop.received == signal.SIGTERM
        try:
            stop.on_train_batch_end(0)
        except TrialInterrupted as error:
            assert isinstance(error, Interrupted) and isinstance(
                error, keras_tuner.errors.FatalError
            )
        else:
            raise AssertionError("no TrialInterrupted at the batch end")
    assert signal.getsignal(signal.SIGTERM) != stop._handle  # the previous handler is back
