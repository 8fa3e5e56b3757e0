"""Training runs: config resolution, strategy, optimizer, run directory, fit.

A run writes `<log_dir>/<exp_name>/<version>/`: `hparams.json`, TensorBoard
events, `metrics.csv`, `checkpoints/best.keras` and, at the end,
`test_metrics.json` (test loss/accuracy of the best weights).
"""

import dataclasses
import os
import random
import re
import time
import typing

import keras
import tensorflow as tf

from relperf_tf import atomic, multi_worker, settings
from relperf_tf import data as data_lib
from relperf_tf import precision as precision_lib
from relperf_tf.callbacks import (
    BestCheckpoint,
    Interrupted,
    MetricsCSVLogger,
    StopOnNonFinite,
    StopOnSignal,
)
from relperf_tf.models import MODEL_NAMES, MODEL_SETTINGS, build_model, check_hparams
from relperf_tf.schedules import SCHEDULES, WarmupSchedule
from relperf_tf.sequence_classifier import (
    SequenceClassifier,
    build_sequence_model,
    check_sequence_hparams,
)

# The settings of every model a run can build: the image models' and the sequence task's.
RUN_MODEL_SETTINGS = MODEL_SETTINGS + SequenceClassifier.SETTINGS

STRATEGIES = ("auto", "mirrored", "default", "multi_worker")
PRESETS = {
    # The demo's CPU budget (about 5 minutes on 2 cores); why each value: docs/presets.md.
    "tiny": dict(
        dim=32,
        depth=2,
        heads=8,
        nb_features=16,
        batch_size=16,
        epochs=3,
        steps_per_epoch=750,
        learning_rate=2e-3,
        schedule="noam",
        warmup=100,
        attn_dropout=0.0,
        ff_dropout=0.0,
        jit_compile=True,
        feature_redraw_interval=0,
    ),
    # About an hour per model on 2 cores: README's five-model comparison (docs/presets.md).
    "small": dict(
        dim=32,
        depth=3,
        heads=8,
        nb_features=16,
        batch_size=16,
        epochs=12,
        steps_per_epoch=750,
        learning_rate=2e-3,
        schedule="noam",
        warmup=400,
        attn_dropout=0.0,
        ff_dropout=0.0,
        jit_compile=True,
    ),
    "reference": dict(dim=128, depth=4, heads=4, batch_size=16),
    "paper": dict(dim=256, depth=6, heads=8, batch_size=22),
}


@dataclasses.dataclass
class RunSettings:
    """How one run trains; `TrainConfig` adds every model setting to these.

    Attributes:
        model: the model to train.
        dataset: the dataset.
        layout: `image` (32×32 pixels on a grid, a class token) or `sequence` (the native
            pixels in raster order as a 1-D sequence, e.g. sequential Fashion-MNIST's 784
            tokens; positions from the token order; `--causal` available).
        log_dir: directory of experiments; a run writes <log_dir>/<exp_name>/<version>/.
        exp_name: experiment name.
        version: run name (None: the next free version_N).
        resume: continue an interrupted run (same version).
        batch_size: global batch size.
        learning_rate: peak learning rate.
        warmup: linear warm-up steps.
        schedule: learning-rate schedule.
        epochs: maximum epochs.
        patience: early-stopping patience on validation accuracy.
        steps_per_epoch: cap on training steps per epoch (quick runs).
        seed: random seed of data, initialisation and FAVOR+ draws (None: drawn and recorded).
        data_dir: TFDS data directory (None: $TFDS_DATA_DIR or ~/tensorflow_datasets).
        strategy: distribution strategy (auto: mirrored over several GPUs or CPU replicas).
        cpu_replicas: split the CPU into N logical devices (tests mirrored training without GPUs).
        jit_compile: compile train steps with XLA.
        precision: `float32`, `mixed_bfloat16` (bf16 matmuls, float32 variables, FAVOR+ feature
            maps and logits) or `auto` (mixed_bfloat16 only where matmuls are natively bf16:
            CPUs with AMX or AVX512_BF16, GPUs from compute capability 8.0).
        preset: the base configuration from `PRESETS` that explicit settings override.
        verbose: Keras' fit verbosity (1 progress bar, 2 one line per epoch, 0 silent).
    """

    model: str
    dataset: str
    layout: str = "image"
    log_dir: str = "logs"
    exp_name: str = "default"
    version: typing.Optional[str] = None
    resume: bool = False
    batch_size: int = 16
    learning_rate: float = 1e-3
    warmup: int = 0
    schedule: str = "constant"
    epochs: int = 100
    patience: int = 20
    steps_per_epoch: typing.Optional[int] = None
    seed: typing.Optional[int] = None
    data_dir: typing.Optional[str] = None
    strategy: str = "auto"
    cpu_replicas: int = 1
    jit_compile: bool = False
    precision: str = "float32"
    preset: typing.Optional[str] = None
    verbose: int = 1

    def model_hparams(self):
        """What the layout's model factory takes: every model setting (the sequence task's too
        with `layout="sequence"`), the seed and the dtype policy."""
        names = MODEL_SETTINGS + (SequenceClassifier.SETTINGS if self.layout == "sequence" else ())
        return dict(
            {s.name: getattr(self, s.name) for s in names},
            seed=self.seed,
            dtype=precision_lib.dtype_policy(self.precision),
        )


def _run_setting_choices():
    return {
        "model": MODEL_NAMES,
        "dataset": tuple(data_lib.DATASETS),
        "layout": data_lib.LAYOUTS,
        "schedule": SCHEDULES,
        "strategy": STRATEGIES,
        "precision": precision_lib.PRECISIONS,
    }


def run_settings():
    """`Setting`s of `RunSettings` (defaults from its fields, help from its docstring)."""
    helps = settings.docstring_entries(RunSettings, "Attributes")
    choices = _run_setting_choices()
    described = []
    for field in dataclasses.fields(RunSettings):
        kind = field.type
        if typing.get_origin(kind) is typing.Union:
            kind = next(a for a in typing.get_args(kind) if a is not type(None))
        default = None if field.default is dataclasses.MISSING else field.default
        described.append(
            settings.Setting(
                field.name, kind, default, helps[field.name], RunSettings, choices.get(field.name)
            )
        )
    return tuple(described)


def run_setting(name):
    """The `Setting` of one `RunSettings` field (for commands that reuse one flag)."""
    return next(s for s in run_settings() if s.name == name)


# Every setting of a run: how it trains, and every model setting (each with
# the default and help of the constructor that uses it).
TrainConfig = dataclasses.make_dataclass(
    "TrainConfig",
    [
        (
            s.name,
            typing.Optional[s.kind] if s.default is None else s.kind,
            dataclasses.field(default=s.default),
        )
        for s in RUN_MODEL_SETTINGS
    ],
    bases=(RunSettings,),
    namespace={
        "__doc__": "Every setting of a run: `RunSettings` and the model's `MODEL_SETTINGS`."
    },
)
TrainConfig.__module__ = __name__


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


def validate_config(config):
    """Raises ValueError naming the flag, its value and what is allowed.

    The run's own settings are checked here; the model's by the model
    (`models.check_hparams`), without building it.
    """
    try:
        _check_run_settings(config)
        if config.model in MODEL_NAMES and config.dataset in data_lib.DATASETS:
            build_run_model(config, check_only=True)
    except settings.InvalidSetting as error:
        raise ValueError(error.flag_message()) from None


def _check_run_settings(config):
    for name, allowed in _run_setting_choices().items():
        settings.check_choice(name, getattr(config, name), allowed)
    for name in ("batch_size", "epochs", "cpu_replicas"):
        settings.check_int(name, getattr(config, name), 1)
    for name in ("warmup", "patience"):
        settings.check_int(name, getattr(config, name), 0)
    if config.schedule == "noam":
        settings.check_int("warmup", config.warmup, 1)
    settings.check_optional_int("steps_per_epoch", config.steps_per_epoch, 1)
    settings.check_number("learning_rate", config.learning_rate, 0.0, exclusive_minimum=True)
    if config.version is not None and not re.fullmatch(r"[\w.-]+", config.version):
        raise settings.InvalidSetting(
            f"version={config.version!r} is not allowed; use letters, digits, '_', '-', '.'.",
            ["version"],
        )


# --- distribution -----------------------------------------------------------


def split_cpu(replicas):
    """Splits the CPU into `replicas` logical devices (before TF initialises them)."""
    if replicas <= 1:
        return
    cpu = tf.config.list_physical_devices("CPU")[0]
    current = tf.config.get_logical_device_configuration(cpu)
    if current and len(current) == replicas:
        return
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * replicas
    )


def make_strategy(name, cpu_replicas=1):
    """`default`, `mirrored` (all GPUs, else the logical CPUs) or `auto` (mirrored with > 1 device).

    `multi_worker` has its own training loop (`multi_worker.train`).
    """
    if name not in STRATEGIES[:3]:
        raise ValueError(f"flag --strategy={name!r} is not allowed; use one of {STRATEGIES[:3]}.")
    gpus = tf.config.list_logical_devices("GPU")
    cpus = tf.config.list_logical_devices("CPU")
    devices = [d.name for d in gpus] or [d.name for d in cpus[: max(cpu_replicas, 1)]]
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


def load_splits(config, embedding_type=None):
    """The run's train/validation/test pipelines (`data.load`) for its dataset, batch size,
    seed, layout and embedding (`embedding_type` overrides it: a tuner trial's)."""
    return data_lib.load(
        config.dataset,
        config.batch_size,
        embedding_type or config.embedding_type,
        config.seed,
        config.data_dir,
        layout=config.layout,
    )


def build_run_model(config, image_shape=None, check_only=False):
    """The run's model for its `layout` (`image_shape` overrides the data's), or with
    `check_only` its settings checked without building anything (InvalidSetting)."""
    spec = data_lib.get_spec(config.dataset)
    hparams = config.model_hparams()
    causal = hparams.pop("causal", config.causal)
    if config.layout == "sequence":
        if hparams.get("margin"):
            raise settings.InvalidSetting(
                f"margin={hparams['margin']} is not allowed with layout='sequence'; "
                "it pads images (use margin=0).",
                ["margin", "layout"],
            )
        sequence = dict(
            channels=spec.channels,
            num_classes=spec.num_classes,
            max_length=spec.sequence_length,
            causal=causal,
        )
        if check_only:
            return check_sequence_hparams(config.model, **sequence, **hparams) and None
        return build_sequence_model(config.model, **sequence, **hparams)
    if causal:
        raise settings.InvalidSetting(
            "causal=True is not allowed with layout='image'; use layout='sequence'.",
            ["causal", "layout"],
        )
    shape = dict(image_shape=image_shape or spec.image_shape, num_classes=spec.num_classes)
    if check_only:
        return check_hparams(config.model, **shape, **hparams) and None
    return build_model(config.model, **shape, **hparams)


def build_compiled_model(config, strategy, image_shape=None):
    """The run's model, built and compiled under `strategy` (`image_shape` overrides the data's)."""
    with strategy.scope():
        model = build_run_model(config, image_shape)
        compile_model(model, config)
    return model


# --- run directory ----------------------------------------------------------


def next_version(exp_dir):
    taken = [
        int(m.group(1))
        for name in (os.listdir(exp_dir) if os.path.isdir(exp_dir) else [])
        if (m := re.fullmatch(r"version_(\d+)", name))
    ]
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
        raise ValueError(
            f"flag --log_dir={config.log_dir!r} is not writable; use a directory you can write to."
        )
    version = config.version or next_version(exp_dir)
    run_dir = os.path.join(exp_dir, version)
    if os.path.exists(run_dir):
        if not config.resume:
            raise ValueError(
                f"flag --version={version!r} exists in {exp_dir}; pass --resume to continue it or "
                "choose another version."
            )
        if os.path.exists(os.path.join(run_dir, "test_metrics.json")):
            raise ValueError(
                f"flag --version={version!r} is already finished (test_metrics.json exists); "
                "choose another version."
            )
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
            raise ValueError(
                f"flag --version={config.version!r} exists in {exp_dir}; pass --resume to "
                "continue it or choose another version."
            ) from None


def run_record(config, run_dir, strategy, model, **extra):
    """What `hparams.json` holds: every setting, where the run lives, and what was built."""
    return dict(
        dataclasses.asdict(config),
        run_dir=run_dir,
        replicas=strategy.num_replicas_in_sync,
        **extra,
        parameters=model.count_params(),
        dtype_policy=model.dtype_policy.name,
        versions=_versions(),
    )


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
        splits = load_splits(config)
    model = build_compiled_model(config, strategy)

    run_dir = claim_run_dir(config)
    checkpoint_dir = os.path.join(run_dir, "checkpoints")
    os.makedirs(checkpoint_dir, exist_ok=True)
    hparams = run_record(config, run_dir, strategy, model)
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
    # The best weights, tested by the compiled (possibly XLA) model already in memory
    # (about half the time of the reloaded file's own uncompiled evaluation).
    model.set_weights(keras.models.load_model(best.path).get_weights())
    test_loss, test_accuracy = model.evaluate(splits.test, verbose=0)
    result = dict(
        test_loss=float(test_loss),
        test_accuracy=float(test_accuracy),
        best_epoch=best.best_epoch,
        best_val_accuracy=best.best,
        train_seconds=time.time() - started,
    )
    atomic.write_json(os.path.join(run_dir, "test_metrics.json"), result)
    return dict(result, run_dir=run_dir)
