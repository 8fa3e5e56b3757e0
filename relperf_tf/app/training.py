"""Training runs in one process: `train(config)` fits, checkpoints and tests one run.

A run writes `<log_dir>/<exp_name>/<version>/`: `hparams.json`, TensorBoard
events, `metrics.csv`, `checkpoints/best.keras` and, at the end,
`test_metrics.json` (test loss/accuracy of the best weights).
`--strategy=multi_worker` runs go to `multi_worker.train`. The run's
settings, set-up and directory live in `run_config`, `run_setup` and
`run_directory`; their public names are re-exported here, the training API.
"""

import os
import random

import keras

from relperf_tf.app import atomic, multi_worker
from relperf_tf.app.callbacks import (
    BestCheckpoint,
    Interrupted,
    MetricsCSVLogger,
    StopOnNonFinite,
    StopOnSignal,
)
from relperf_tf.app.errors import RunWriteError, TrainingDivergedError
from relperf_tf.app.run_config import (
    PRESETS,
    RUN_MODEL_SETTINGS,
    SEQUENCE_SETTINGS,
    STRATEGIES,
    RunSettings,
    TrainConfig,
    build_run_model,
    resolve_config,
    run_setting,
    run_settings,
    validate_config,
)
from relperf_tf.app.run_context import finish_run, open_run
from relperf_tf.app.run_directory import claim_run_dir, next_version, plan_run_dir, run_record
from relperf_tf.app.run_setup import (
    build_compiled_model,
    compile_model,
    ema_callbacks,
    load_splits,
    make_optimizer,
    make_strategy,
    split_cpu,
)

__all__ = [
    "PRESETS",
    "RUN_MODEL_SETTINGS",
    "SEQUENCE_SETTINGS",
    "STRATEGIES",
    "RunSettings",
    "RunWriteError",
    "TrainConfig",
    "TrainingDivergedError",
    "build_compiled_model",
    "build_run_model",
    "check_run",
    "claim_run_dir",
    "compile_model",
    "ema_callbacks",
    "load_splits",
    "make_optimizer",
    "make_strategy",
    "next_version",
    "plan_run_dir",
    "resolve_config",
    "run_record",
    "run_setting",
    "run_settings",
    "split_cpu",
    "train",
    "validate_config",
]


def check_run(config):
    """Fails on a bad --log_dir/--version (or TF_CONFIG) before any work; creates nothing."""
    if config.strategy == "multi_worker":
        cluster = multi_worker.read_cluster()
        multi_worker.check_config(config, cluster)
        if not cluster.is_chief:
            return  # only the chief writes the run directory
    plan_run_dir(config)


def train(config, splits=None):
    """Trains, checkpoints and tests one run; returns the test metrics dict (and `run_dir`).

    Args:
        config: a validated `TrainConfig`.
        splits: optional `data.Splits` (tests pass small pipelines); loaded
            from TFDS when None.
    """
    validate_config(config)
    if config.strategy == "multi_worker":
        return multi_worker.train(config, splits)
    if config.seed is None:
        config.seed = random.randrange(2**31)
    plan_run_dir(config)  # fail on a bad --log_dir/--version before any work
    keras.utils.set_random_seed(config.seed)
    strategy = make_strategy(config.strategy, config.cpu_replicas)
    if splits is None:
        splits = load_splits(config)
    model = build_compiled_model(config, strategy)
    context = open_run(config, strategy, model, splits, claim_run_dir(config))
    best = _fit(context)
    result = finish_run(context, best, lambda dataset: context.model.evaluate(dataset, verbose=0))
    return dict(result, run_dir=context.run_dir)


def _fit(context):
    """`model.fit` with the run's callbacks; returns its `BestCheckpoint`.

    Raises `Interrupted` (a signal; the last epoch is kept), `RunWriteError`
    (a file could not be written) or `TrainingDivergedError` (NaN/Inf loss).
    """
    config, run_dir = context.config, context.run_dir
    history = MetricsCSVLogger(context.path("metrics.csv"))
    best = BestCheckpoint(context.best_path, history, config.patience)
    guard = StopOnNonFinite()
    stop_on_signal = StopOnSignal()
    callbacks = [
        # Two backups: a kill while one is written leaves the other loadable.
        keras.callbacks.BackupAndRestore(context.backup_dir, double_checkpoint=True),
        *ema_callbacks(config),  # after the backup: it saves the trained weights
        guard,
        history,
        best,
        keras.callbacks.TensorBoard(context.path("tensorboard")),
        stop_on_signal,  # last: raises only after the others wrote their files
    ]
    with stop_on_signal:
        try:
            context.model.fit(
                context.splits.train,
                validation_data=context.splits.validation,
                epochs=config.epochs,
                steps_per_epoch=config.steps_per_epoch,
                shuffle=False,  # the tf.data pipeline shuffles (Keras would warn it ignores this)
                callbacks=callbacks,
                verbose=config.verbose,
            )
        except Interrupted as interrupted:
            interrupted.run_dir = run_dir
            raise
        except Exception as error:
            if not (isinstance(error, OSError) or atomic.is_disk_full(error)):
                raise
            reason = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
            raise RunWriteError(
                f"cannot write to {run_dir} ({reason}); the last finished epoch is kept: "
                f"free space, then continue with --resume --version={os.path.basename(run_dir)}"
            ) from None
    if guard.bad_batch is not None:
        raise TrainingDivergedError(
            f"loss became NaN/Inf at batch {guard.bad_batch}; training stopped. "
            f"The last good checkpoint is kept in {context.checkpoint_dir}. "
            "Try a lower --learning_rate."
        )
    return best
