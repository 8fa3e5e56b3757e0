"""One run in progress: its settings, strategy, model, data and directory, and how it ends.

Both training loops (`training.train`, one process under `model.fit`;
`multi_worker.train`, a custom loop on every worker) open a `RunContext`
and finish through `finish_run`: the best weights tested, `test_metrics.json`
written.
"""

import dataclasses
import os
import time
import typing

import keras
import tensorflow as tf

from relperf_tf.app import atomic
from relperf_tf.app.data import Splits
from relperf_tf.app.run_directory import run_record


@dataclasses.dataclass
class RunContext:
    """A run being trained.

    Attributes:
        config: the run's `TrainConfig`.
        strategy: the `tf.distribute.Strategy` it trains under.
        model: the compiled model.
        splits: the train/validation/test pipelines.
        run_dir: where its files go (a non-chief worker's is a temporary one).
        started: `time.time()` when training began.
    """

    config: typing.Any
    strategy: tf.distribute.Strategy
    model: keras.Model
    splits: Splits
    run_dir: str
    started: float = dataclasses.field(default_factory=time.time)

    @property
    def checkpoint_dir(self):
        return os.path.join(self.run_dir, "checkpoints")

    @property
    def best_path(self):
        return os.path.join(self.checkpoint_dir, "best.keras")

    @property
    def backup_dir(self):
        return os.path.join(self.run_dir, "backup")

    def path(self, name):
        return os.path.join(self.run_dir, name)


def open_run(config, strategy, model, splits, run_dir, **record):
    """The `RunContext` of a claimed `run_dir`: `checkpoints/` made, `hparams.json` written
    (kept when resuming) from the config, the model and `record`'s extra entries."""
    context = RunContext(config, strategy, model, splits, run_dir)
    os.makedirs(context.checkpoint_dir, exist_ok=True)
    hparams_path = context.path("hparams.json")
    if not (config.resume and os.path.exists(hparams_path)):
        atomic.write_json(hparams_path, run_record(config, run_dir, strategy, model, **record))
    return context


def finish_run(context, best, evaluate):
    """Tests the best weights and writes `test_metrics.json`; returns its dict.

    Args:
        context: the `RunContext`.
        best: the run's `callbacks.BestCheckpoint`.
        evaluate: `evaluate(dataset) → (loss, accuracy)` of the loop that trained.
    """
    # The best weights, tested by the compiled (possibly XLA) model already in memory
    # (about half the time of the reloaded file's own uncompiled evaluation).
    context.model.set_weights(keras.models.load_model(best.path).get_weights())
    test_loss, test_accuracy = evaluate(context.splits.test)
    result = dict(
        test_loss=float(test_loss),
        test_accuracy=float(test_accuracy),
        best_epoch=best.best_epoch,
        best_val_accuracy=best.best,
        train_seconds=time.time() - context.started,
    )
    atomic.write_json(context.path("test_metrics.json"), result)
    return result
