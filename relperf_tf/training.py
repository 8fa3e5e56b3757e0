"""Training runs: config resolution, strategy, optimizer, run directory, fit.

A run writes `<log_dir>/<exp_name>/<version>/`: `hparams.json`, TensorBoard
events, `metrics.csv`, `checkpoints/best.keras` and, at the end,
`test_metrics.json` (test loss/accuracy of the best weights).
"""

import dataclasses
import json
import math
import os
import random
import re
import time

import keras
import tensorflow as tf

from relperf_tf import atomic
from relperf_tf import data as data_lib
from relperf_tf import multi_worker
from relperf_tf.callbacks import BestCheckpoint, Interrupted, MetricsCSVLogger, StopOnNonFinite, StopOnSignal
from relperf_tf.layers.pixel_embedding import EMBEDDING_TYPES
from relperf_tf.layers.favor_kernel import KERNELS
from relperf_tf.models import DEFAULT_HPARAMS, MODEL_NAMES, POSITION_KERNELS, build_model
from relperf_tf.schedules import SCHEDULES, WarmupSchedule

STRATEGIES = ("auto", "mirrored", "default", "multi_worker")
PRESETS = {
    # A CPU budget of about 5 minutes on 2 cores (make demo runs it with the
    # circular exact factor, m = 1 and one epoch of 1 500 steps): 2 blocks at dim 32 (the relative
    # model needs 2: the class token has no position, so its first attention is
    # content-only). 8 heads: each head has its own learned rotations, i.e. its
    # own relative-position pattern; RelativePerformer's validation accuracy
    # after 1 250 steps of 32 rose with them (2 heads 0.69, 4 heads 0.72,
    # 8 heads 0.76). m = 16 per head keeps the feature work (heads × m per
    # token) at what 4 heads × 32 cost. 2 250 XLA steps of 16 (more updates for
    # the same images; 2 400 took 317 s with the progress bar, over budget).
    # noam, peak 2e-3 at step 100, 0.4e-3 at the end: the decay steadies the
    # last epoch (with warm-up 400, ending at 0.8e-3, one seed of three fell to
    # 0.73). 3 epochs: each validation pass takes ≈ 11 s.
    # No redraws: with so few features a redraw visibly changes the function
    # (the training accuracy fell from 0.65 to 0.54 right after the one at
    # step 1 000). Fast, but tied to its one draw: not shift robust (README).
    "tiny": dict(dim=32, depth=2, heads=8, nb_features=16, batch_size=16, epochs=3, steps_per_epoch=750, learning_rate=2e-3, schedule="noam", warmup=100, attn_dropout=0.0, ff_dropout=0.0, jit_compile=True, feature_redraw_interval=0),
    # What this 2-core CPU trains in about an hour per model (the five-model
    # comparison in README): the tiny width at depth 3 (the last block computes
    # the class token only, so two blocks of token features), 12 epochs of
    # 750 steps of 16, noam 2e-3 with warm-up 400.
    "small": dict(dim=32, depth=3, heads=8, nb_features=16, batch_size=16, epochs=12, steps_per_epoch=750, learning_rate=2e-3, schedule="noam", warmup=400, attn_dropout=0.0, ff_dropout=0.0, jit_compile=True),
    "reference": dict(dim=128, depth=4, heads=4, batch_size=16),
    "paper": dict(dim=256, depth=6, heads=8, batch_size=22),
}


@dataclasses.dataclass
class TrainConfig:
    """Every setting of a run (the CLI flags); model hyperparameters included."""

    model: str
    dataset: str
    log_dir: str = "logs"
    exp_name: str = "default"
    version: str = None
    resume: bool = False
    batch_size: int = 16
    embedding_type: str = "linear"
    learning_rate: float = 1e-3
    warmup: int = 0
    schedule: str = "constant"
    epochs: int = 100
    patience: int = 20
    steps_per_epoch: int = None
    seed: int = None
    data_dir: str = None
    strategy: str = "auto"
    cpu_replicas: int = 1
    jit_compile: bool = False
    preset: str = None
    dim: int = DEFAULT_HPARAMS["dim"]
    depth: int = DEFAULT_HPARAMS["depth"]
    heads: int = DEFAULT_HPARAMS["heads"]
    attn_dropout: float = DEFAULT_HPARAMS["attn_dropout"]
    ff_dropout: float = DEFAULT_HPARAMS["ff_dropout"]
    nb_features: int = DEFAULT_HPARAMS["nb_features"]
    feature_redraw_interval: int = DEFAULT_HPARAMS["feature_redraw_interval"]
    no_projection: bool = DEFAULT_HPARAMS["no_projection"]
    kernel: str = DEFAULT_HPARAMS["kernel"]
    pos_scales: int = DEFAULT_HPARAMS["pos_scales"]
    content_rel_attn: bool = DEFAULT_HPARAMS["content_rel_attn"]
    position_kernel: str = DEFAULT_HPARAMS["position_kernel"]
    locality: float = DEFAULT_HPARAMS["locality"]
    margin: int = DEFAULT_HPARAMS["margin"]
    clipping_dist: int = DEFAULT_HPARAMS["clipping_dist"]
    remat: bool = DEFAULT_HPARAMS["remat"]
    verbose: int = 1

    def model_hparams(self):
        return {name: getattr(self, name) for name in DEFAULT_HPARAMS}


class TrainingDivergedError(RuntimeError):
    """The loss became NaN or Inf."""


class RunWriteError(RuntimeError):
    """A file of the run directory could not be written (e.g. the disk is full)."""


def resolve_config(model, dataset, preset=None, **explicit):
    """Defaults < preset < explicit settings; then validated."""
    if preset is not None and preset not in PRESETS:
        raise ValueError(f"flag --preset={preset!r} is not allowed; use one of {tuple(PRESETS)}.")
    values = dict(PRESETS.get(preset, {}))
    values.update({k: v for k, v in explicit.items() if v is not None})
    unknown = sorted(set(values) - {f.name for f in dataclasses.fields(TrainConfig)})
    if unknown:
        raise ValueError(f"unknown settings {unknown}.")
    config = TrainConfig(model=model, dataset=dataset, preset=preset, **values)
    validate_config(config)
    return config


def _choice(name, value, allowed):
    if value not in allowed:
        raise ValueError(f"flag --{name}={value!r} is not allowed; use one of {tuple(allowed)}.")


def _at_least(name, value, minimum, kind=int):
    if value is None or (kind is int and (isinstance(value, bool) or int(value) != value)) or value < minimum:
        what = "an integer" if kind is int else "a number"
        raise ValueError(f"flag --{name}={value!r} is not allowed; use {what} >= {minimum}.")


def validate_config(config):
    """Raises ValueError naming the flag, its value and what is allowed."""
    _choice("model", config.model, MODEL_NAMES)
    _choice("dataset", config.dataset, tuple(data_lib.DATASETS))
    _choice("embedding_type", config.embedding_type, EMBEDDING_TYPES)
    _choice("schedule", config.schedule, SCHEDULES)
    _choice("strategy", config.strategy, STRATEGIES)
    _choice("kernel", config.kernel, KERNELS[:2])
    _choice("position_kernel", config.position_kernel, POSITION_KERNELS)
    if config.content_rel_attn and config.position_kernel != "favor":
        raise ValueError(f"flag --content_rel_attn is not allowed with --position_kernel={config.position_kernel}; use --position_kernel=favor or --nocontent_rel_attn.")
    for name in ("batch_size", "epochs", "dim", "depth", "heads", "pos_scales", "clipping_dist", "cpu_replicas"):
        _at_least(name, getattr(config, name), 1)
    for name in ("warmup", "patience", "margin"):
        _at_least(name, getattr(config, name), 0)
    if not (isinstance(config.locality, (int, float)) and config.locality >= 0 and math.isfinite(config.locality)):
        raise ValueError(f"flag --locality={config.locality!r} is not allowed; use a number >= 0 (0: the paper's N(0, 1) init).")
    if config.schedule == "noam":
        _at_least("warmup", config.warmup, 1)
    for name in ("steps_per_epoch", "nb_features"):
        if getattr(config, name) is not None:
            _at_least(name, getattr(config, name), 1)
    if config.feature_redraw_interval is not None:
        _at_least("feature_redraw_interval", config.feature_redraw_interval, 0)
    if not (isinstance(config.learning_rate, (int, float)) and config.learning_rate > 0 and math.isfinite(config.learning_rate)):
        raise ValueError(f"flag --learning_rate={config.learning_rate!r} is not allowed; use a number > 0.")
    for name in ("attn_dropout", "ff_dropout"):
        value = getattr(config, name)
        if not 0.0 <= value < 1.0:
            raise ValueError(f"flag --{name}={value!r} is not allowed; use a number in [0, 1).")
    if config.dim % config.heads:
        raise ValueError(f"flag --dim={config.dim} is not divisible by --heads={config.heads}; choose heads that divide dim.")
    if config.model == "Performer" and config.dim % 4:
        raise ValueError(f"flag --dim={config.dim} is not allowed for Performer; use a multiple of 4.")
    if config.model == "ClippedRelativePerformer" and config.heads % 2:
        raise ValueError(f"flag --heads={config.heads} is not allowed for ClippedRelativePerformer; use an even number.")
    channels = data_lib.DATASETS[config.dataset].channels
    if config.embedding_type == "lookup" and config.dim % channels:
        raise ValueError(f"flag --dim={config.dim} is not divisible by the {channels} channels of {config.dataset}; the lookup embedding needs that.")
    if config.version is not None and not re.fullmatch(r"[\w.-]+", config.version):
        raise ValueError(f"flag --version={config.version!r} is not allowed; use letters, digits, '_', '-', '.'.")


# --- distribution -----------------------------------------------------------


def split_cpu(replicas):
    """Splits the CPU into `replicas` logical devices (before TF initialises them)."""
    if replicas <= 1:
        return
    cpu = tf.config.list_physical_devices("CPU")[0]
    current = tf.config.get_logical_device_configuration(cpu)
    if current and len(current) == replicas:
        return
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * replicas)


def make_strategy(name, cpu_replicas=1):
    """`default`, `mirrored` (all GPUs, else the logical CPUs) or `auto` (mirrored with > 1 device).

    `multi_worker` has its own training loop (`multi_worker.train`).
    """
    _choice("strategy", name, STRATEGIES[:3])
    gpus = tf.config.list_logical_devices("GPU")
    cpus = tf.config.list_logical_devices("CPU")
    devices = [d.name for d in gpus] or [d.name for d in cpus[:max(cpu_replicas, 1)]]
    if name == "mirrored" or (name == "auto" and len(devices) > 1):
        # Logical CPUs share memory: reduce on one device instead of collective
        # ops (whose instance keys also clash between strategies in one process).
        cross_device_ops = None if gpus else tf.distribute.ReductionToOneDevice()
        return tf.distribute.MirroredStrategy(devices, cross_device_ops=cross_device_ops)
    return tf.distribute.get_strategy()


# --- optimizer and model ----------------------------------------------------


def make_optimizer(learning_rate=1e-3, schedule="constant", warmup=0):
    """Adam(β₁ 0.9, β₂ 0.98) with global gradient-norm clipping at 0.5."""
    return keras.optimizers.Adam(
        learning_rate=WarmupSchedule(learning_rate, schedule, warmup),
        beta_1=0.9,
        beta_2=0.98,
        global_clipnorm=0.5,
    )


def compile_model(model, config):
    model.compile(
        optimizer=make_optimizer(config.learning_rate, config.schedule, config.warmup),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        jit_compile=config.jit_compile,
    )
    return model


def build_compiled_model(config, strategy, image_shape=None):
    """The run's model, built and compiled under `strategy` (image_shape: override, for benchmarks)."""
    spec = data_lib.get_spec(config.dataset)
    with strategy.scope():
        model = build_model(config.model, image_shape=image_shape or spec.image_shape, num_classes=spec.num_classes, **config.model_hparams())
        compile_model(model, config)
    return model


# --- run directory ----------------------------------------------------------


def next_version(exp_dir):
    taken = [int(m.group(1)) for name in (os.listdir(exp_dir) if os.path.isdir(exp_dir) else []) if (m := re.fullmatch(r"version_(\d+)", name))]
    return f"version_{max(taken, default=-1) + 1}"


def _writable(path):
    """Whether `path` could be created: its nearest existing ancestor is a writable dir."""
    path = os.path.abspath(path)
    while not os.path.exists(path):
        path = os.path.dirname(path)
    return os.path.isdir(path) and os.access(path, os.W_OK | os.X_OK)


def plan_run_dir(config):
    """The run directory to use, checked but not created."""
    exp_dir = os.path.join(config.log_dir, config.exp_name)
    if not _writable(config.log_dir) or (os.path.exists(exp_dir) and not _writable(exp_dir)):
        raise ValueError(f"flag --log_dir={config.log_dir!r} is not writable; use a directory you can write to.")
    version = config.version or next_version(exp_dir)
    run_dir = os.path.join(exp_dir, version)
    if os.path.exists(run_dir):
        if not config.resume:
            raise ValueError(f"flag --version={version!r} exists in {exp_dir}; pass --resume to continue it or choose another version.")
        if os.path.exists(os.path.join(run_dir, "test_metrics.json")):
            raise ValueError(f"flag --version={version!r} is already finished (test_metrics.json exists); choose another version.")
    return run_dir


def check_run(config):
    """Fails on a bad --log_dir/--version (or TF_CONFIG) before any work; creates nothing."""
    if config.strategy == "multi_worker":
        cluster = multi_worker.read_cluster()
        multi_worker.check_config(config, cluster)
        if not cluster.is_chief:
            return  # only the chief writes the run directory
    plan_run_dir(config)


def claim_run_dir(config):
    """Creates the run directory and returns it; safe against concurrent runs.

    `os.mkdir` is atomic: of two runs that planned the same automatic
    `version_N`, one creates it and the other takes the next free number. An
    explicit `--version` that appeared meanwhile is an error, as in
    `plan_run_dir`; with `--resume` the existing directory is reused.
    """
    exp_dir = os.path.join(config.log_dir, config.exp_name)
    os.makedirs(exp_dir, exist_ok=True)
    while True:
        run_dir = os.path.join(exp_dir, config.version or next_version(exp_dir))
        try:
            os.mkdir(run_dir)
            return run_dir
        except FileExistsError:
            if config.version is None:
                continue  # another run took this number first
            if config.resume:
                return run_dir
            raise ValueError(f"flag --version={config.version!r} exists in {exp_dir}; pass --resume to continue it or choose another version.") from None


def _versions():
    return {"tensorflow": tf.__version__, "keras": keras.__version__}


# --- the run ----------------------------------------------------------------


def train(config, splits=None):
    """Trains, checkpoints and tests one run; returns the test metrics dict.

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
        splits = data_lib.load(config.dataset, config.batch_size, config.embedding_type, config.seed, config.data_dir)
    model = build_compiled_model(config, strategy)

    run_dir = claim_run_dir(config)
    checkpoint_dir = os.path.join(run_dir, "checkpoints")
    os.makedirs(checkpoint_dir, exist_ok=True)
    hparams = dict(dataclasses.asdict(config), run_dir=run_dir, replicas=strategy.num_replicas_in_sync, parameters=model.count_params(), versions=_versions())
    hparams_path = os.path.join(run_dir, "hparams.json")
    if not (config.resume and os.path.exists(hparams_path)):
        atomic.write_json(hparams_path, hparams)

    history = MetricsCSVLogger(os.path.join(run_dir, "metrics.csv"))
    best = BestCheckpoint(os.path.join(checkpoint_dir, "best.keras"), history, config.patience)
    guard = StopOnNonFinite()
    stop_on_signal = StopOnSignal()
    callbacks = [
        # Two backups: a kill while one is written leaves the other loadable.
        keras.callbacks.BackupAndRestore(os.path.join(run_dir, "backup"), double_checkpoint=True),
        guard,
        history,
        best,
        keras.callbacks.TensorBoard(os.path.join(run_dir, "tensorboard")),
        stop_on_signal,  # last: raises only after the others wrote their files
    ]
    started = time.time()
    with stop_on_signal:
        try:
            model.fit(
                splits.train,
                validation_data=splits.validation,
                epochs=config.epochs,
                steps_per_epoch=config.steps_per_epoch,
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
            f"The last good checkpoint is kept in {checkpoint_dir}. Try a lower --learning_rate."
        )
    # The best weights, tested by the compiled (possibly XLA) model already in
    # memory: the reloaded file's own uncompiled evaluation took 42 s against
    # 23 s for the tiny preset's 10 000 test images.
    model.set_weights(keras.models.load_model(best.path).get_weights())
    test_loss, test_accuracy = model.evaluate(splits.test, verbose=0)
    result = dict(test_loss=float(test_loss), test_accuracy=float(test_accuracy), best_epoch=best.best_epoch, best_val_accuracy=best.best, train_seconds=time.time() - started)
    atomic.write_json(os.path.join(run_dir, "test_metrics.json"), result)
    return dict(result, run_dir=run_dir)
