"""absl flag definitions and error handling shared by the scripts."""

import contextlib
import dataclasses
import os
import re
import signal
import sys

from absl import app, flags, logging

from relperf_tf.app import atomic, settings
from relperf_tf.app import data as data_lib
from relperf_tf.app.callbacks import Interrupted
from relperf_tf.app.errors import RunWriteError, TrainingDivergedError
from relperf_tf.app.model_settings import MODEL_SETTINGS
from relperf_tf.app.multi_worker import WorkerLostError
from relperf_tf.app.training import PRESETS, TrainConfig, run_setting, run_settings
from relperf_tf.layers.favor_kernel import upgrade_legacy_options
from relperf_tf.models import MODEL_NAMES
from relperf_tf.validation import InvalidSetting

EXIT_BAD_INPUT = 2
EXIT_NO_DATA = 3
EXIT_DIVERGED = 4
EXIT_FILE_SYSTEM = 5
EXIT_WORKER_LOST = 6
EXIT_SIGNAL_BASE = 128  # + the signal number, as shells report a killed process


def _allowed(values):
    return "{" + ",".join(str(v) for v in values) + "}"


# Flags of the run's own settings (model, dataset and preset have their own).
RUN_FLAGS = (
    "batch_size",
    "epochs",
    "patience",
    "steps_per_epoch",
    "seed",
    "data_dir",
    "strategy",
    "cpu_replicas",
    "jit_compile",
    "precision",
    "learning_rate",
    "warmup",
    "schedule",
    "augment_shift",
    "augment_flip",
    "label_smoothing",
    "ema_momentum",
)
# Flags of releases before `--feature_map`, still read: --kernel=relu, --no_projection.
LEGACY_FLAGS = ("kernel", "no_projection")
_DEFINE = {
    int: flags.DEFINE_integer,
    float: flags.DEFINE_float,
    bool: flags.DEFINE_boolean,
    str: flags.DEFINE_string,
}


def flag_help(setting):
    """A flag's help from its `Setting`: which models use it, the docstring's text, the allowed
    values, the default."""
    text = re.sub(r"^(int|float|bool|str), ", "", setting.help)
    text = text[:1].upper() + text[1:] if text[:1].isascii() else text
    if setting.models:
        text = f"{'/'.join(setting.models)}: {text}"
    if setting.choices and not all(f"`{c}`" in text for c in setting.choices):
        text = f"{text} One of {_allowed(setting.choices)}."
    default = setting.default
    if default is not None:
        text = f"{text} (default: {str(default).lower() if isinstance(default, bool) else default})"
    return text


def define_setting_flags(described):
    """One flag per `Setting` (default None, so that only what the user set overrides a preset)."""
    for setting in described:
        _DEFINE[setting.kind](setting.name, None, flag_help(setting))


def define_precision_flag(default, note):
    """`--precision` for a command that is not a training run (benchmark, export): the run
    setting's help and choices, this command's default and a `note` on what it means here."""
    setting = dataclasses.replace(run_setting("precision"), default=None)
    text = f"{flag_help(setting)} {note}"
    flags.DEFINE_string("precision", default, f"{text} (default: {default})" if default else text)


def define_run_flags():
    """Flags naming what to train and how (shared by train.py and tune.py), generated from
    `training.RunSettings` and every model's `MODEL_SETTINGS`."""
    flags.DEFINE_string("model", None, f"The model to train: {_allowed(MODEL_NAMES)}.")
    flags.DEFINE_string("dataset", None, f"The dataset: {_allowed(data_lib.DATASETS)}.")
    flags.DEFINE_string(
        "preset", None, f"Base configuration {_allowed(PRESETS)}; explicit flags override it."
    )
    run = {s.name: s for s in run_settings()}
    define_setting_flags(run[name] for name in RUN_FLAGS)
    define_setting_flags(MODEL_SETTINGS)
    flags.DEFINE_string("kernel", None, "Deprecated: --feature_map=softmax|relu.")
    flags.DEFINE_boolean("no_projection", None, "Deprecated: --feature_map=efficient.")


def explicit_settings(names=None):
    """The TrainConfig fields the user set on the command line (deprecated flags translated)."""
    fields = {f.name for f in dataclasses.fields(TrainConfig)} - {"model", "dataset", "preset"}
    values = {
        name: flags.FLAGS[name].value
        for name in fields
        if name in flags.FLAGS and flags.FLAGS[name].present and (names is None or name in names)
    }
    legacy = {
        name: flags.FLAGS[name].value
        for name in LEGACY_FLAGS
        if name in flags.FLAGS and flags.FLAGS[name].present
    }
    if legacy and (names is None or "feature_map" in names):
        if "feature_map" in values:
            raise ValueError(
                "flag --feature_map cannot be combined with the deprecated "
                f"{['--' + n for n in legacy]}."
            )
        values["feature_map"] = upgrade_legacy_options(legacy)["feature_map"]
    return values


def require(*names):
    for name in names:
        if flags.FLAGS[name].value is None:
            raise ValueError(f"flag --{name} is required.")


@contextlib.contextmanager
def errors_to_exit_codes():
    """Bad input → exit 2, missing or corrupt data → 3, diverged training → 4,
    a file that cannot be written (full disk) → 5, another worker of a
    multi-worker run lost → 6, SIGTERM/SIGINT → 128 + signum;
    one `error:` line each."""
    try:
        yield
    except InvalidSetting as error:
        fail(settings.flag_message(error))
    except ValueError as error:
        fail(error)
    except data_lib.DataUnavailableError as error:
        fail(error, EXIT_NO_DATA)
    except TrainingDivergedError as error:
        fail(error, EXIT_DIVERGED)
    except Interrupted as error:
        run_dir = getattr(error, "run_dir", None)
        hint = (
            f"; the last finished epoch is kept in {run_dir}: continue with --resume "
            f"--version={os.path.basename(run_dir)}"
            if run_dir
            else ""
        )
        fail(f"{error}{hint}.", EXIT_SIGNAL_BASE + error.signum)
    except RunWriteError as error:
        fail(error, EXIT_FILE_SYSTEM)
    except WorkerLostError as error:
        fail(
            f"lost contact with another worker ({error}); training stopped. Restart every worker "
            "with --resume --version=<the chief's run>.",
            EXIT_WORKER_LOST,
        )
    except OSError as error:
        fail(f"file system error: {_first_line(error)}", EXIT_FILE_SYSTEM)
    except Exception as error:
        if not atomic.is_disk_full(error):
            raise
        fail(f"file system error: {_first_line(error)}", EXIT_FILE_SYSTEM)


def _first_line(error):
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:300]


def fail(message, code=EXIT_BAD_INPUT):
    print(f"error: {message}", file=sys.stderr)
    sys.exit(code)


def reject_positional(argv):
    """Scripts configured only by --flags: refuse stray positional arguments."""
    if len(argv) > 1:
        fail(f"unexpected arguments {argv[1:]}; all settings are --flags.")


# --help groups a command's flags by what they set (settings not listed: the model group).
DATA_FLAGS = ("dataset", "data_dir", "layout", "augment_shift", "augment_flip")
POSITION_FLAGS = ("pos_scales", "position_kernel", "locality", "content_rel_attn", "clipping_dist")
FAVOR_FLAGS = ("nb_features", "feature_map", "feature_redraw_interval", *LEGACY_FLAGS)
MODEL_FLAGS = ("model",)
HELP_GROUPS = ("run", "data", "model", "FAVOR+", "position")
HELP_REQUESTS = ("--help", "-h", "--helpshort", "-help")


def help_group(name):
    """The --help group of flag `name`: one of `HELP_GROUPS`, or None (the command's own)."""
    if name in DATA_FLAGS:
        return "data"
    if name in POSITION_FLAGS:
        return "position"
    if name in FAVOR_FLAGS:
        return "FAVOR+"
    if name in MODEL_FLAGS or name in {s.name for s in MODEL_SETTINGS} or name == "causal":
        return "model"
    if name in {s.name for s in run_settings()} or name in ("log_dir", "progress_bar"):
        return "run"
    return None


def command_flags(module):
    """The flags a command defines (in `module`, and `cli`'s shared ones), never TensorFlow's or
    absl's own; `--log_dir` when the command made it its run root."""
    by_module = flags.FLAGS.flags_by_module_dict()
    own = [f for name in (module, __name__) for f in by_module.get(name, [])]
    log_dir = flags.FLAGS["log_dir"] if "log_dir" in flags.FLAGS else None
    if log_dir is not None and log_dir.default == TrainConfig.log_dir:
        log_dir.help = flag_help(run_setting("log_dir"))  # absl's text is about its log files
        own.append(log_dir)
    unique = {f.name: f for f in own}
    return list(unique.values())


def _flag_line(flag):
    name = f"--[no]{flag.name}" if flag.boolean else f"--{flag.name}"
    text = flag.help or ""
    if flag.default is not None and "(default:" not in text:
        default = flag.default
        if flag.boolean:
            default = str(default).lower()
        elif isinstance(default, (list, tuple)):
            default = ",".join(str(v) for v in default)
        text = f"{text} (default: {default})"
    return f"  {name}: {text}"


def help_text(module, program):
    """`--help` of the command in `module`: its docstring, then its flags grouped (`HELP_GROUPS`,
    then the command's own), each with its help, choices and default."""
    doc = (sys.modules[module].__doc__ or "").strip().splitlines()
    lines = [f"USAGE: {program} [--flags]"] + ([doc[0], ""] if doc else [""])
    groups = {}
    for flag in sorted(command_flags(module), key=lambda f: f.name):
        groups.setdefault(help_group(flag.name) or module.rsplit(".", 1)[-1], []).append(flag)
    order = [g for g in HELP_GROUPS if g in groups] + sorted(set(groups) - set(HELP_GROUPS))
    for group in order:
        lines.append(f"{group} flags:")
        lines.extend(_flag_line(flag) for flag in groups[group])
        lines.append("")
    lines.append("Try --helpfull for every flag, TensorFlow's and absl's included.")
    return "\n".join(lines)


def _parser(module):
    def parse(argv):
        if any(arg in HELP_REQUESTS for arg in argv[1:]):
            print(help_text(module, os.path.basename(argv[0])))
            sys.exit(0)
        try:
            return flags.FLAGS(argv)
        except flags.Error as error:
            fail(str(error))

    return parse


_signals_received = []


def _exit_on_signal(signum, frame):
    """SIGTERM/SIGINT as SystemExit(128 + signum): `finally`/`except BaseException` cleanups still
    run."""
    _signals_received.append(signum)
    print(f"error: interrupted by {signal.Signals(signum).name}.", file=sys.stderr)
    raise SystemExit(EXIT_SIGNAL_BASE + signum)


def _main_ending_by_signal(main, argv):
    """`main(argv)`; after a signal, the exit code is 128 + signum whatever exception the
    SystemExit became on its way out (a context manager of TensorFlow's that it crosses while
    tracing asserts in its `__exit__`, which turns it into an AssertionError)."""
    try:
        return main(argv)
    except BaseException as error:
        if not _signals_received:
            raise
        code = EXIT_SIGNAL_BASE + _signals_received[0]
        if isinstance(error, SystemExit) and error.code == code:
            raise
        raise SystemExit(code) from error


def run(main):
    """`app.run` with one-line errors for bad flags instead of absl's usage dump.

    SIGTERM and SIGINT end the script through SystemExit, so code that writes
    to a staging place removes it (training replaces these handlers with its
    own, which stop between batches).
    """

    def quiet_main(argv):
        logging.set_verbosity(logging.WARNING)  # TFDS logs every split it opens
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, _exit_on_signal)
        return _main_ending_by_signal(main, argv)

    app.run(quiet_main, flags_parser=_parser(main.__module__))
