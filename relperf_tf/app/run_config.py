"""A run's settings: `RunSettings`, every model setting (`TrainConfig`), presets, checks.

A setting lives in one place: the run's own here (`RunSettings`, its
docstring the help), the model's with the library constructor that uses it
(`model_settings`). Flags, the tuner and `hparams.json` are generated from
both.
"""

import dataclasses
import os
import re
import typing

from relperf_tf.app import data as data_lib
from relperf_tf.app import precision as precision_lib
from relperf_tf.app import settings
from relperf_tf.app.model_settings import MODEL_SETTINGS, SEQUENCE_SETTINGS
from relperf_tf.models import (
    MODEL_NAMES,
    build_model,
    build_sequence_model,
    check_hparams,
    check_sequence_hparams,
)
from relperf_tf.schedules import SCHEDULES

# The settings of every model a run can build: the image models' and the sequence task's.
RUN_MODEL_SETTINGS = MODEL_SETTINGS + SEQUENCE_SETTINGS


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
        init_from: warm start: the weights of another run's best model (its run directory) or
            of a `.keras` file, for a model of the same shapes (`position_kernel` may differ:
            `exact` and `circular` share their weights) or with fewer blocks (a larger
            `depth`, up to 2·source − 1: the source's blocks keep their order and each added
            block starts as the identity); the optimizer and schedule start afresh. A
            `--resume` backup takes precedence.
        batch_size: global batch size.
        learning_rate: peak learning rate.
        warmup: linear warm-up steps.
        schedule: learning-rate schedule (`cosine` decays to 0 at epochs × steps_per_epoch).
        augment_shift: random translation of every training image by up to this many pixels
            along each axis, background filled in (0: none; image layout only): what a
            practitioner tries for shift robustness instead of relative positions.
        augment_flip: mirror every training image left–right with probability ½ (image layout
            only): label-preserving for Fashion-MNIST, and not a translation.
        label_smoothing: train against (1 − ε)·onehot + ε/classes instead of the one-hot labels
            (0: none; 0 ≤ ε < 1).
        ema_momentum: validate, checkpoint and test the exponential moving average of the
            weights, updated after every step with this momentum (0: off; 0 ≤ μ < 1; 0.999
            averages about the last 1 000 steps).
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
    init_from: typing.Optional[str] = None
    batch_size: int = 16
    learning_rate: float = 1e-3
    warmup: int = 0
    schedule: str = "constant"
    augment_shift: int = 0
    augment_flip: bool = False
    label_smoothing: float = 0.0
    ema_momentum: float = 0.0
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
        names = MODEL_SETTINGS + (SEQUENCE_SETTINGS if self.layout == "sequence" else ())
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
        raise ValueError(settings.flag_message(error)) from None


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
    if config.schedule == "cosine" and (
        config.steps_per_epoch is None or config.epochs * config.steps_per_epoch <= config.warmup
    ):
        raise settings.InvalidSetting(
            f"schedule='cosine' is not allowed with steps_per_epoch={config.steps_per_epoch}; "
            f"set steps_per_epoch so that epochs × steps_per_epoch > warmup={config.warmup}.",
            ["schedule", "steps_per_epoch"],
        )
    settings.check_int("augment_shift", config.augment_shift, 0, hint=" (pixels)")
    if config.augment_shift and config.layout != "image":
        raise settings.InvalidSetting(
            f"augment_shift={config.augment_shift} is not allowed with layout='sequence'; use "
            "layout='image' or augment_shift=0.",
            ["augment_shift", "layout"],
        )
    if config.augment_flip and config.layout != "image":
        raise settings.InvalidSetting(
            "augment_flip=True is not allowed with layout='sequence'; use layout='image' or "
            "augment_flip=False.",
            ["augment_flip", "layout"],
        )
    settings.check_number("label_smoothing", config.label_smoothing, 0.0, 1.0)
    settings.check_number("ema_momentum", config.ema_momentum, 0.0, 1.0)
    settings.check_number("learning_rate", config.learning_rate, 0.0, exclusive_minimum=True)
    if config.init_from is not None:
        init_weights_path(config.init_from)
    if config.version is not None and not re.fullmatch(r"[\w.-]+", config.version):
        raise settings.InvalidSetting(
            f"version={config.version!r} is not allowed; use letters, digits, '_', '-', '.'.",
            ["version"],
        )


def init_weights_path(source):
    """The `.keras` file of `--init_from` (a run directory's `checkpoints/best.keras`, or the
    file itself); raises InvalidSetting when there is none."""
    path = os.path.join(source, "checkpoints", "best.keras") if os.path.isdir(source) else source
    if not (path.endswith(".keras") and os.path.isfile(path)):
        raise settings.InvalidSetting(
            f"init_from={source!r} is not allowed; use a run directory with "
            "checkpoints/best.keras or a .keras file.",
            ["init_from"],
        )
    return path


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
