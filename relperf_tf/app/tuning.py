"""Keras Tuner searches over the model factory, with the training code of train.py.

The search space is defined once (`define_search_space`): the training
settings here, every tunable model setting by the layer that owns it
(`Setting.search`). dim and heads are drawn as one choice among the pairs
the model accepts, so a trial never gets dim % heads ≠ 0.
"""

import csv
import dataclasses
import io
import os

import keras
import keras_tuner as kt
import tensorflow as tf

from relperf_tf.app import atomic, export, settings, training
from relperf_tf.app import data as data_lib
from relperf_tf.app.callbacks import Interrupted, StopOnSignal
from relperf_tf.app.model_settings import MODEL_SETTINGS
from relperf_tf.models import check_hparams

TUNERS = ("random", "hyperband", "bayesian")
DIM_CHOICES = (32, 64, 128)
HEADS_CHOICES = (2, 4, 8)


def _accepts(model, channels=1, **hparams):
    """Whether `model` accepts `hparams` (its own checks decide)."""
    try:
        check_hparams(model, image_shape=(2, 2, channels), num_classes=2, **hparams)
    except settings.InvalidSetting:
        return False
    return True


def valid_dim_heads(model, dims=DIM_CHOICES, heads=HEADS_CHOICES, channels=1):
    """Pairs "DIMxHEADS" the model accepts (heads divides dim; even for the clipped model)."""
    pairs = [f"{d}x{h}" for d in dims for h in heads if _accepts(model, channels, dim=d, heads=h)]
    if not pairs:
        raise ValueError(
            f"the search space yields no valid dim/heads pair for {model}: --dims={list(dims)}, "
            f"--heads={list(heads)} (heads must divide dim)."
        )
    return pairs


def define_search_space(hp, model, channels, dims=DIM_CHOICES, heads=HEADS_CHOICES):
    """Samples one configuration; returns TrainConfig field values.

    dim and heads are one choice among the pairs the model accepts; every
    model setting with a search space (`Setting.search`, declared by the
    layer that owns it) follows, a choice keeping the values the model
    accepts with every pair.
    """
    pairs = valid_dim_heads(model, dims, heads, channels)
    dim, n_heads = map(int, hp.Choice("dim_heads", pairs).split("x"))
    values = dict(
        dim=dim,
        heads=n_heads,
        learning_rate=hp.Float("learning_rate", 1e-4, 3e-3, sampling="log"),
        schedule=hp.Choice("schedule", ["constant", "noam"]),
        warmup=hp.Choice("warmup", [100, 500, 1000]),
    )
    for setting in MODEL_SETTINGS:
        space = setting.search
        if space is None or not setting.applies_to(model):
            continue
        if isinstance(space, settings.Choice):
            space = settings.Choice(
                tuple(
                    v
                    for v in space.values
                    if all(
                        _accepts(
                            model,
                            channels,
                            dim=int(p.split("x")[0]),
                            heads=int(p.split("x")[1]),
                            **{setting.name: v},
                        )
                        for p in pairs
                    )
                )
            )
        values[setting.name] = space.sample(hp, setting.name)
    return values


class PerformerHyperModel(kt.HyperModel):
    """Builds, compiles and fits a trial's model exactly as train.py does.

    Args:
        base_config: `TrainConfig` holding the fixed part (preset, data, steps).
        load_splits: callable embedding_type → `data.Splits` (the pipeline
            depends on it: `lookup` takes uint8 pixels).
    """

    def __init__(self, base_config, load_splits, dims=DIM_CHOICES, heads=HEADS_CHOICES):
        super().__init__(name=base_config.model)
        self.base_config = base_config
        self.load_splits = load_splits
        self.dims, self.heads = tuple(dims), tuple(heads)
        self.channels = data_lib.get_spec(base_config.dataset).channels
        self._splits = {}

    def trial_config(self, hp):
        values = define_search_space(
            hp, self.base_config.model, self.channels, self.dims, self.heads
        )
        config = dataclasses.replace(self.base_config, **values)
        training.validate_config(config)
        return config

    def build(self, hp):
        # Keras Tuner enters the distribution strategy's scope around build().
        return training.build_compiled_model(self.trial_config(hp), tf.distribute.get_strategy())

    def splits(self, embedding_type):
        if embedding_type not in self._splits:
            self._splits[embedding_type] = self.load_splits(embedding_type)
        return self._splits[embedding_type]

    def fit(self, hp, model, *args, **kwargs):
        splits = self.splits(self.trial_config(hp).embedding_type)
        return model.fit(splits.train, validation_data=splits.validation, **kwargs)


def make_tuner(
    name, hypermodel, max_trials, max_epochs, directory, project_name, overwrite, seed, strategy
):
    if name not in TUNERS:
        raise ValueError(f"flag --tuner={name!r} is not allowed; use one of {TUNERS}.")
    common = dict(
        objective=kt.Objective("val_accuracy", "max"),
        directory=directory,
        project_name=project_name,
        overwrite=overwrite,
        seed=seed,
        distribution_strategy=strategy,
    )
    if name == "hyperband":
        return kt.Hyperband(
            hypermodel,
            max_epochs=max_epochs,
            factor=3,
            hyperband_iterations=1,
            max_consecutive_failed_trials=1,
            **common,
        )
    if name == "bayesian":
        return kt.BayesianOptimization(
            hypermodel, max_trials=max_trials, max_consecutive_failed_trials=1, **common
        )
    return kt.RandomSearch(
        hypermodel, max_trials=max_trials, max_consecutive_failed_trials=1, **common
    )


def trial_rows(tuner):
    rows = []
    for trial in tuner.oracle.trials.values():
        rows.append(
            dict(
                trial_id=trial.trial_id,
                status=trial.status,
                val_accuracy=trial.score,
                **trial.hyperparameters.values,
            )
        )
    return sorted(rows, key=lambda r: (r["val_accuracy"] is None, -(r["val_accuracy"] or 0)))


def write_summary(rows, path):
    columns = list(dict.fromkeys(key for row in rows for key in row))
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    atomic.write_text(path, text.getvalue())


class TrialInterrupted(Interrupted, kt.errors.FatalError):
    """SIGTERM/SIGINT inside a trial. Keras Tuner re-raises a FatalError without
    marking the trial, so it stays RUNNING in the saved state and runs again on resume."""


class StopTrialOnSignal(StopOnSignal):
    """`StopOnSignal` for trials: the signal is only recorded (never raised inside
    TensorFlow's tracing, where a library's bare `except` can swallow it) and
    leaves the search at the next batch end as `TrialInterrupted`."""

    error = TrialInterrupted


def search(
    base_config,
    tuner_name,
    max_trials,
    max_epochs,
    tuner_dir,
    project_name,
    overwrite=False,
    load_splits=None,
    dims=DIM_CHOICES,
    heads=HEADS_CHOICES,
    export_dir=None,
):
    """Runs (or resumes) a search; writes best_hyperparameters.json, trials.csv, best.keras.

    Returns:
        dict with the project directory, the best hyperparameters and trial rows.
    """
    _check_search(base_config, tuner_name, max_trials, max_epochs, dims, heads)
    if base_config.seed is None:
        base_config = dataclasses.replace(base_config, seed=0)
    keras.utils.set_random_seed(base_config.seed)
    strategy = training.make_strategy(base_config.strategy, base_config.cpu_replicas)
    if load_splits is None:

        def load_splits(embedding_type):
            return training.load_splits(base_config, embedding_type)

    hypermodel = PerformerHyperModel(base_config, load_splits, dims, heads)
    tuner = make_tuner(
        tuner_name,
        hypermodel,
        max_trials,
        max_epochs,
        tuner_dir,
        project_name,
        overwrite,
        base_config.seed,
        strategy,
    )
    stop = keras.callbacks.EarlyStopping(
        monitor="val_accuracy", mode="max", patience=base_config.patience or 1
    )
    with StopTrialOnSignal() as stop_on_signal:
        tuner.search(
            epochs=max_epochs,
            steps_per_epoch=base_config.steps_per_epoch,
            # The moving average (--ema_momentum) is what is validated and kept.
            callbacks=[*training.ema_callbacks(base_config), stop, stop_on_signal],
            verbose=base_config.verbose,
        )
        stop_on_signal.check()  # a signal after the last batch: nothing is written yet
    return _write_results(tuner, hypermodel, os.path.join(tuner_dir, project_name), export_dir)


def _check_search(base_config, tuner_name, max_trials, max_epochs, dims, heads):
    """The search's own flags, the base run's settings and the dim × heads grid (ValueError)."""
    if max_trials < 1:
        raise ValueError(f"flag --max_trials={max_trials} is not allowed; use an integer >= 1.")
    if max_epochs < 1:
        raise ValueError(f"flag --max_epochs={max_epochs} is not allowed; use an integer >= 1.")
    if tuner_name not in TUNERS:
        raise ValueError(f"flag --tuner={tuner_name!r} is not allowed; use one of {TUNERS}.")
    training.validate_config(base_config)
    valid_dim_heads(base_config.model, dims, heads, data_lib.get_spec(base_config.dataset).channels)


def _write_results(tuner, hypermodel, project, export_dir):
    """best_hyperparameters.json, trials.csv and best.keras (and the SavedModel with
    `export_dir`); returns what `search` returns."""
    best_hp = tuner.get_best_hyperparameters(1)[0]
    best_config = hypermodel.trial_config(best_hp)
    atomic.write_json(
        os.path.join(project, "best_hyperparameters.json"),
        dict(hyperparameters=best_hp.values, config=dataclasses.asdict(best_config)),
    )
    rows = trial_rows(tuner)
    write_summary(rows, os.path.join(project, "trials.csv"))
    best_model = tuner.get_best_models(1)[0]
    atomic.save_model(best_model, os.path.join(project, "best.keras"))
    exported = None
    if export_dir:
        exported = export.export_saved_model(
            best_model,
            best_config.dataset,
            best_config.embedding_type,
            export_dir,
            dict(model=best_config.model, tuner_project=os.path.abspath(project)),
        )
    return dict(
        project=project, best_hyperparameters=best_hp.values, trials=rows, exported=exported
    )
