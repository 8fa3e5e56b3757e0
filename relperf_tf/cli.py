"""absl flag definitions and error handling shared by the scripts."""

import contextlib
import dataclasses
import os
import signal
import sys

from absl import app, flags, logging

from relperf_tf import atomic
from relperf_tf import data as data_lib
from relperf_tf.layers.favor_kernel import KERNELS
from relperf_tf.layers.pixel_embedding import EMBEDDING_TYPES
from relperf_tf.models import MODEL_NAMES, POSITION_KERNELS
from relperf_tf.schedules import SCHEDULES
from relperf_tf.training import PRESETS, STRATEGIES, TrainConfig

EXIT_BAD_INPUT = 2
EXIT_NO_DATA = 3
EXIT_DIVERGED = 4
EXIT_FILE_SYSTEM = 5
EXIT_WORKER_LOST = 6
EXIT_SIGNAL_BASE = 128  # + the signal number, as shells report a killed process


def _allowed(values):
    return "{" + ",".join(values) + "}"


def define_run_flags():
    """Flags naming what to train and how (shared by train.py and tune.py)."""
    flags.DEFINE_string("model", None, f"The model to train: {_allowed(MODEL_NAMES)}.")
    flags.DEFINE_string("dataset", None, f"The dataset: {_allowed(data_lib.DATASETS)}.")
    flags.DEFINE_string("preset", None, f"Base configuration {_allowed(PRESETS)}; explicit flags override it.")
    flags.DEFINE_integer("batch_size", None, "Global batch size (default 16).")
    flags.DEFINE_integer("epochs", None, "Maximum epochs (default 100).")
    flags.DEFINE_integer("patience", None, "Early-stopping patience on validation accuracy (default 20).")
    flags.DEFINE_integer("steps_per_epoch", None, "Cap on training steps per epoch (quick runs).")
    flags.DEFINE_integer("seed", None, "Random seed (default: drawn and recorded).")
    flags.DEFINE_string("data_dir", None, "TFDS data directory (default: $TFDS_DATA_DIR or ~/tensorflow_datasets).")
    flags.DEFINE_string("strategy", None, f"Distribution strategy {_allowed(STRATEGIES)} (default auto).")
    flags.DEFINE_integer("cpu_replicas", None, "Split the CPU into N logical devices (tests mirrored training without GPUs).")
    flags.DEFINE_boolean("jit_compile", None, "Compile train steps with XLA.")
    flags.DEFINE_string("embedding_type", None, f"Pixel embedding {_allowed(EMBEDDING_TYPES)} (default linear).")
    flags.DEFINE_float("learning_rate", None, "Peak learning rate (default 1e-3).")
    flags.DEFINE_integer("warmup", None, "Linear warm-up steps (default 0).")
    flags.DEFINE_string("schedule", None, f"Learning-rate schedule {_allowed(SCHEDULES)} (default constant).")
    flags.DEFINE_integer("dim", None, "Token width (default 128).")
    flags.DEFINE_integer("depth", None, "Number of blocks (default 4).")
    flags.DEFINE_integer("heads", None, "Attention heads; must divide dim (default 4).")
    flags.DEFINE_float("attn_dropout", None, "Dropout on attention outputs (default 0.1).")
    flags.DEFINE_float("ff_dropout", None, "Dropout inside the feed-forward (default 0.1).")
    flags.DEFINE_integer("nb_features", None, "FAVOR+ random features (default int(d·ln d)).")
    flags.DEFINE_integer("feature_redraw_interval", None, "Redraw random features every N steps; 0 never (default 1000).")
    flags.DEFINE_boolean("no_projection", None, "Efficient attention (softmax features) instead of random features.")
    flags.DEFINE_string("kernel", None, f"FAVOR+ kernel {_allowed(KERNELS[:2])} (default softmax).")
    flags.DEFINE_integer("pos_scales", None, "RelativePerformer: sinusoid scales per coordinate (default 4).")
    flags.DEFINE_boolean("content_rel_attn", None, "RelativePerformer: content-conditioned rotation.")
    flags.DEFINE_string("position_kernel", None, f"RelativePerformer: positional logits {_allowed(POSITION_KERNELS)}: estimated by FAVOR+ with the content (the paper), or an exact factor over grid offsets (equivariant for any random draw) or cyclic offsets (invariant to cyclic shifts) (default favor).")
    flags.DEFINE_float("locality", None, "RelativePerformer: start head h attending around neighbour offset h with this amplitude of α, β (0: N(0, 1) as in the paper; default 0).")
    flags.DEFINE_integer("margin", None, "Pixels of background (zeros after preprocessing) added around each image inside the model (default 0).")
    flags.DEFINE_integer("clipping_dist", None, "ClippedRelativePerformer: clipping distance D (default 8).")
    flags.DEFINE_boolean("remat", None, "Recompute feature maps and feed-forward activations in the backward pass: less memory for long sequences, about a third more compute.")


def explicit_settings(names=None):
    """The TrainConfig fields the user set on the command line."""
    fields = {f.name for f in dataclasses.fields(TrainConfig)} - {"model", "dataset", "preset"}
    return {name: flags.FLAGS[name].value for name in fields if name in flags.FLAGS and flags.FLAGS[name].present and (names is None or name in names)}


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
    from relperf_tf.callbacks import Interrupted
    from relperf_tf.multi_worker import WorkerLostError
    from relperf_tf.training import RunWriteError, TrainingDivergedError

    try:
        yield
    except ValueError as error:
        fail(error)
    except data_lib.DataUnavailableError as error:
        fail(error, EXIT_NO_DATA)
    except TrainingDivergedError as error:
        fail(error, EXIT_DIVERGED)
    except Interrupted as error:
        run_dir = getattr(error, "run_dir", None)
        hint = f"; the last finished epoch is kept in {run_dir}: continue with --resume --version={os.path.basename(run_dir)}" if run_dir else ""
        fail(f"{error}{hint}.", EXIT_SIGNAL_BASE + error.signum)
    except RunWriteError as error:
        fail(error, EXIT_FILE_SYSTEM)
    except WorkerLostError as error:
        fail(f"lost contact with another worker ({error}); training stopped. Restart every worker with --resume --version=<the chief's run>.", EXIT_WORKER_LOST)
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


def _parse(argv):
    try:
        return flags.FLAGS(argv)
    except flags.Error as error:
        fail(str(error))


def _exit_on_signal(signum, frame):
    """SIGTERM/SIGINT as SystemExit(128 + signum): `finally`/`except BaseException` cleanups still run."""
    print(f"error: interrupted by {signal.Signals(signum).name}.", file=sys.stderr)
    raise SystemExit(EXIT_SIGNAL_BASE + signum)


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
        return main(argv)

    app.run(quiet_main, flags_parser=_parse)
