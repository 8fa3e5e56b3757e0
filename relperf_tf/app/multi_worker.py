"""Training across machines: MultiWorkerMirroredStrategy with a custom loop.

Keras 3's `model.fit` does not run under `MultiWorkerMirroredStrategy`
(keras-team/keras#20585: the epoch iterator's `strategy.reduce` of a
PerReplica value fails), so `--strategy=multi_worker` trains with
`strategy.run` of one step, as TensorFlow's multi-worker tutorials do. Every
worker runs the same loop on the same seeded data stream:

- data: each global batch of the single-machine pipeline is split across the
  replicas (`distribute_datasets_from_function`; replica r takes rows
  [r·b, (r+1)·b)), so a step sees exactly the images one process would see;
- step: the gradient of Σ loss / global batch is all-reduced, clipped by its
  global norm (as one process clips it) and applied by the run's optimizer;
  loss, accuracy, NaN and stop requests are all-reduced, so every worker
  takes the same decisions (best epoch, early stop, NaN stop, signals);
- evaluation: worker w evaluates global batches w, w + W, ...; the sums are
  all-reduced;
- files: the chief (worker 0) writes the run directory of a single-machine
  run; the others write the same files into a temporary directory they
  delete at the end;
- resume: every worker restores the chief's last epoch checkpoint
  (`<run_dir>/backup`, `tf.train.CheckpointManager`), so `--log_dir` must be
  a file system every worker sees, as for Keras' BackupAndRestore; the data
  stream continues where that epoch ended.
"""

import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import os
import random
import shutil
import signal
import tempfile
import typing
import zlib

import keras
import numpy as np
import tensorflow as tf

from relperf_tf.app.callbacks import BestCheckpoint, Interrupted, MetricsCSVLogger, StopOnSignal
from relperf_tf.app.errors import TrainingDivergedError
from relperf_tf.app.losses import make_loss
from relperf_tf.app.run_context import finish_run, open_run
from relperf_tf.app.run_directory import claim_run_dir, plan_run_dir
from relperf_tf.app.run_setup import build_compiled_model, ema_callbacks, load_splits

TF_CONFIG_EXAMPLE = (
    '{"cluster": {"worker": ["host0:12345", "host1:12345"]}, '
    '"task": {"type": "worker", "index": 0}}'
)
# Settings that one process per worker cannot honour.
UNSUPPORTED = {"cpu_replicas": 1}


class WorkerLostError(RuntimeError):
    """A collective failed: another worker died or became unreachable."""


@dataclasses.dataclass(frozen=True)
class Cluster:
    """The workers ("host:port") and this process's index; worker 0 is the chief."""

    workers: tuple
    index: int

    @property
    def is_chief(self):
        return self.index == 0


def _tf_config_error(problem):
    return ValueError(
        f"TF_CONFIG {problem}; --strategy=multi_worker needs, on every worker, "
        f"TF_CONFIG='{TF_CONFIG_EXAMPLE}' with that worker's own index."
    )


def read_cluster(environ=None):
    """The cluster described by `TF_CONFIG` (ValueError with one line if it is unusable)."""
    text = (os.environ if environ is None else environ).get("TF_CONFIG", "")
    if not text.strip():
        raise _tf_config_error("is not set")
    try:
        spec = json.loads(text)
    except json.JSONDecodeError as error:
        raise _tf_config_error(
            f"is not valid JSON ({error.msg} at character {error.pos})"
        ) from None
    if (
        not isinstance(spec, dict)
        or not isinstance(spec.get("cluster"), dict)
        or not isinstance(spec.get("task"), dict)
    ):
        raise _tf_config_error("needs a 'cluster' and a 'task' object")
    jobs = sorted(set(spec["cluster"]) - {"worker"})
    if jobs:
        raise _tf_config_error(
            f"has jobs {jobs}; only 'worker' jobs are supported (worker 0 is the chief)"
        )
    workers = spec["cluster"].get("worker")
    if not (
        isinstance(workers, list)
        and workers
        and all(
            isinstance(w, str) and w.rpartition(":")[2].isdigit() and w.rpartition(":")[0]
            for w in workers
        )
    ):
        raise _tf_config_error(
            f"cluster.worker={workers!r} is not a non-empty list of 'host:port' strings"
        )
    task_type, index = spec["task"].get("type"), spec["task"].get("index")
    if task_type != "worker":
        raise _tf_config_error(f"task.type={task_type!r} is not allowed; use 'worker'")
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(workers):
        raise _tf_config_error(
            f"task.index={index!r} is outside the cluster; use 0 … {len(workers) - 1}"
        )
    return Cluster(tuple(workers), index)


def check_config(config, cluster):
    """Settings this loop cannot run (ValueError naming the flag)."""
    for name, allowed in UNSUPPORTED.items():
        if getattr(config, name) != allowed:
            raise ValueError(
                f"flag --{name}={getattr(config, name)!r} is not allowed with "
                f"--strategy=multi_worker (one replica per worker); use --{name}={allowed}."
            )
    if config.batch_size % len(cluster.workers):
        raise ValueError(
            f"flag --batch_size={config.batch_size} is not divisible by the "
            f"{len(cluster.workers)} workers of TF_CONFIG; use a multiple of "
            f"{len(cluster.workers)} (the global batch is split evenly)."
        )


class _EagerCollectivesFilter(logging.Filter):
    """Drops TF's warning about eager collectives: only the few small ones outside the step run
    eagerly."""

    def filter(self, record):
        return "CollectiveAllReduceStrategy eagerly" not in record.getMessage()


def make_strategy():
    """MultiWorkerMirroredStrategy over TF_CONFIG's workers (gRPC ring all-reduce on CPUs)."""
    logging.getLogger("tensorflow").addFilter(_EagerCollectivesFilter())
    options = tf.distribute.experimental.CommunicationOptions(
        implementation=tf.distribute.experimental.CommunicationImplementation.RING
    )
    return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)


# --- collectives ---------------------------------------------------------------


def _all_reduce(strategy, values):
    """The sum over all workers of `values` (this worker's numbers), as float64."""

    def reduce(x):
        return tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, x)

    result = strategy.run(reduce, args=(tf.constant(values, tf.float64),))
    return strategy.experimental_local_results(result)[0].numpy()


def _all_gather(strategy, values):
    """`[workers, len(values)]`: every worker's `values` (int64)."""

    def gather(x):
        return tf.distribute.get_replica_context().all_gather(x[None], axis=0)

    result = strategy.run(gather, args=(tf.constant(values, tf.int64),))
    return strategy.experimental_local_results(result)[0].numpy()


def agree(strategy, values, what, hint="start every worker with the same flags"):
    """Checks that every worker holds the same integers `values`; returns them."""
    table = _all_gather(strategy, [int(v) for v in values])
    if not (table == table[0]).all():
        raise ValueError(
            f"the workers disagree on {what} "
            f"({', '.join(f'worker {w}: {list(row)}' for w, row in enumerate(table))}); {hint}."
        )
    return [int(v) for v in table[0]]


def _settings_fingerprint(config):
    """A checksum of the settings every worker must share (all but verbosity; the seed too, set or
    not)."""
    shared = {k: v for k, v in dataclasses.asdict(config).items() if k != "verbose"}
    return zlib.crc32(json.dumps(shared, sort_keys=True, default=str).encode()) & 0x7FFFFFFF


@contextlib.contextmanager
def _collectives_guard():
    """A failed collective (a worker gone) as WorkerLostError."""
    try:
        yield
    except (
        tf.errors.UnavailableError,
        tf.errors.CancelledError,
        tf.errors.DeadlineExceededError,
        tf.errors.AbortedError,
        tf.errors.FailedPreconditionError,
    ) as error:
        lines = [
            line.strip()
            for line in str(error).splitlines()
            if line.strip() and "Graph execution error" not in line
        ]
        raise WorkerLostError(
            f"{type(error).__name__}: {lines[0][:200] if lines else ''}"
        ) from None


# --- data ----------------------------------------------------------------------


def distribute_train(strategy, dataset, global_batch, skip_batches):
    """Global batches (repeated, the first `skip_batches` skipped), split across the replicas."""
    stream = dataset.repeat().skip(skip_batches)

    def replica_dataset(context):
        size = context.get_per_replica_batch_size(global_batch)
        start = context.input_pipeline_id * size
        return stream.map(
            lambda images, labels: (images[start : start + size], labels[start : start + size])
        )

    return strategy.distribute_datasets_from_function(replica_dataset)


# --- the loop ------------------------------------------------------------------


class Loop:
    """One step and one evaluation pass under the strategy (same on every worker)."""

    def __init__(self, strategy, cluster, model, global_batch, jit_compile, label_smoothing=0.0):
        self.strategy, self.cluster, self.model = strategy, cluster, model
        self.optimizer = model.optimizer
        self.global_batch = global_batch
        self.clipnorm = self.optimizer.global_clipnorm
        self.loss = make_loss(label_smoothing, reduction=None)
        self.gradients = tf.function(self._gradients, jit_compile=jit_compile)
        self.predict = tf.function(self._predict, jit_compile=jit_compile)
        self.step = tf.function(self._step)

    def _gradients(self, images, labels):
        with tf.GradientTape() as tape:
            logits = self.model(images, training=True)
            losses = self.loss(labels, logits)
            loss = tf.reduce_sum(losses) / self.global_batch
        weights = self.model.trainable_variables
        grads = tape.gradient(loss, weights)
        grads = [tf.zeros_like(w) if g is None else g for g, w in zip(grads, weights)]
        return grads, self._sums(labels, logits, losses)

    @staticmethod
    def _sums(labels, logits, losses):
        correct = tf.cast(
            tf.equal(tf.argmax(logits, -1, output_type=labels.dtype), labels), tf.float64
        )
        return tf.stack(
            [
                tf.reduce_sum(tf.cast(losses, tf.float64)),
                tf.reduce_sum(correct),
                tf.cast(tf.size(labels), tf.float64),
            ]
        )

    def _replica_step(self, images, labels, stop):
        grads, sums = self.gradients(images, labels)
        context = tf.distribute.get_replica_context()
        grads = context.all_reduce(tf.distribute.ReduceOp.SUM, grads)
        if self.clipnorm:
            grads, _ = tf.clip_by_global_norm(grads, self.clipnorm)
        # The optimizer all-reduces (sums) again: hand it 1/R of the global gradient.
        share = 1.0 / self.strategy.num_replicas_in_sync
        self.optimizer.apply([g * share for g in grads], self.model.trainable_variables)
        return context.all_reduce(tf.distribute.ReduceOp.SUM, tf.concat([sums, [stop]], 0))

    def _step(self, iterator, stop):
        images, labels = next(iterator)
        sums = self.strategy.run(self._replica_step, args=(images, labels, stop))
        return self.strategy.experimental_local_results(sums)[0]

    def train_step(self, iterator, stop):
        """[Σ loss, Σ correct, examples, stop requests] of one global step, over all workers."""
        with _collectives_guard():
            return self.step(iterator, tf.constant(float(stop), tf.float64)).numpy()

    def _predict(self, images, labels):
        logits = self.model(images, training=False)
        return self._sums(labels, logits, self.loss(labels, logits))

    def evaluate(self, dataset):
        """(loss, accuracy) over `dataset`; worker w takes batches w, w + W, ..."""
        local = np.zeros(3)
        for images, labels in dataset.shard(len(self.cluster.workers), self.cluster.index):
            local += self.predict(images, labels).numpy()
        with _collectives_guard():
            loss_sum, correct, count = _all_reduce(self.strategy, local)
        return loss_sum / max(count, 1), correct / max(count, 1)


def backup_checkpoint(model, epoch):
    """A `tf.train.Checkpoint` of every model and optimizer variable and the epoch.

    Variables are listed flat, in order: a Keras 3 model's own object graph
    does not reach every layer (blocks in a list, the FAVOR+ redraw state).
    """
    variables = {f"model_{i}": w.value for i, w in enumerate(model.weights)}
    variables.update({f"optimizer_{i}": v.value for i, v in enumerate(model.optimizer.variables)})
    return tf.train.Checkpoint(epoch=epoch, **variables)


def _restore(checkpoint, backup_dir):
    """Restores the newest checkpoint in `backup_dir`; returns the epoch to start from."""
    latest = tf.train.latest_checkpoint(backup_dir) if os.path.isdir(backup_dir) else None
    if latest is None:
        return 0
    checkpoint.restore(latest).assert_consumed()
    return int(checkpoint.epoch.numpy())


def _copy_chief_files(chief_dir, run_dir):
    """A non-chief worker resuming starts from the chief's history and best model."""
    for name in ("metrics.csv", os.path.join("checkpoints", "best.keras")):
        source = os.path.join(chief_dir, name)
        if os.path.exists(source):
            shutil.copyfile(source, os.path.join(run_dir, name))


def train(config, splits=None, environ=None):
    """`training.train` for one worker of a MultiWorkerMirroredStrategy cluster."""
    cluster = read_cluster(environ)
    check_config(config, cluster)
    if cluster.is_chief:
        plan_run_dir(config)
    strategy = make_strategy()
    _agree_on_settings_and_seed(strategy, cluster, config)
    keras.utils.set_random_seed(config.seed)
    if splits is None:
        splits = load_splits(config)
    model = build_compiled_model(config, strategy)
    with strategy.scope():
        model.optimizer.build(model.trainable_variables)
        epoch_var = tf.Variable(0, dtype=tf.int64, trainable=False)
    run_dir = (
        claim_run_dir(config)
        if cluster.is_chief
        else tempfile.mkdtemp(prefix=f"relperf-worker{cluster.index}-")
    )
    try:
        context = open_run(config, strategy, model, splits, run_dir, workers=list(cluster.workers))
        result = WorkerRun.start(context, cluster, epoch_var).fit()
        # Finished: as BackupAndRestore, no backup left.
        shutil.rmtree(context.backup_dir, ignore_errors=True)
    finally:
        if not cluster.is_chief:
            shutil.rmtree(run_dir, ignore_errors=True)
    return dict(result, run_dir=run_dir if cluster.is_chief else None, worker=cluster.index)


def _agree_on_settings_and_seed(strategy, cluster, config):
    """Every worker has the same settings (checksum) and seed (the chief's draw when unset)."""
    with _collectives_guard():
        agree(strategy, [_settings_fingerprint(config)], "the settings (a checksum of their flags)")
        if config.seed is None:
            draw = float(random.randrange(2**31) if cluster.is_chief else 0)
            config.seed = int(_all_reduce(strategy, [draw])[0])


@dataclasses.dataclass
class WorkerRun:
    """One worker's epochs of a run: its loop, checkpoints and where it resumes.

    Attributes:
        context: the `RunContext` (a non-chief's `run_dir` is temporary).
        cluster: the `Cluster`.
        loop: the `Loop` of steps and evaluations.
        epoch_var: the checkpointed epoch counter.
        manager: the `tf.train.CheckpointManager` of `<run_dir>/backup`.
        start_epoch: the first epoch to train (every worker agrees).
        chief_dir: the chief's run directory when `--version` names it, else None.
    """

    context: typing.Any
    cluster: Cluster
    loop: Loop
    epoch_var: tf.Variable
    manager: tf.train.CheckpointManager
    start_epoch: int
    chief_dir: typing.Optional[str]

    @classmethod
    def start(cls, context, cluster, epoch_var):
        """Restores the chief's last epoch when resuming; every worker agrees where to start."""
        config, model = context.config, context.model
        chief_dir = (
            os.path.join(config.log_dir, config.exp_name, config.version)
            if config.version
            else None
        )
        checkpoint = backup_checkpoint(model, epoch_var)
        start_epoch = 0
        if config.resume and chief_dir:
            start_epoch = _restore(checkpoint, os.path.join(chief_dir, "backup"))
            if not cluster.is_chief:
                _copy_chief_files(chief_dir, context.run_dir)
        with _collectives_guard():
            start_epoch = agree(
                context.strategy,
                [start_epoch],
                "the epoch to resume from",
                "--log_dir must be a file system every worker sees (each restores the chief's "
                "checkpoint)",
            )[0]
        manager = tf.train.CheckpointManager(checkpoint, context.backup_dir, max_to_keep=2)
        loop = Loop(
            context.strategy,
            cluster,
            model,
            config.batch_size,
            config.jit_compile,
            config.label_smoothing,
        )
        return cls(context, cluster, loop, epoch_var, manager, start_epoch, chief_dir)

    def fit(self):
        """The epochs, then the test of the best weights (every worker writes into its run_dir)."""
        context, config = self.context, self.context.config
        steps = config.steps_per_epoch or int(context.splits.train.cardinality())
        if steps < 1:
            raise ValueError("the training split's size is unknown; set --steps_per_epoch.")
        iterator = iter(
            distribute_train(
                context.strategy, context.splits.train, config.batch_size, self.start_epoch * steps
            )
        )
        history = MetricsCSVLogger(context.path("metrics.csv"), initial_epoch=self.start_epoch)
        best = BestCheckpoint(context.best_path, history, config.patience)
        callbacks = keras.callbacks.CallbackList(
            [*ema_callbacks(config), history, best], model=context.model, epochs=config.epochs
        )
        writers = {
            name: tf.summary.create_file_writer(context.path(os.path.join("tensorboard", name)))
            for name in ("train", "validation")
        }
        stop_on_signal = StopOnSignal()
        callbacks.on_train_begin()
        with stop_on_signal:
            for epoch in range(self.start_epoch, config.epochs):
                callbacks.on_epoch_begin(epoch)
                logs = self._train_epoch(epoch, steps, iterator, stop_on_signal, callbacks)
                self.epoch_var.assign(epoch + 1)
                # First, as BackupAndRestore: a metrics row implies its backup.
                self.manager.save(checkpoint_number=epoch + 1)
                callbacks.on_epoch_end(epoch, logs)
                self._log_epoch(writers, epoch, logs)
                if context.model.stop_training:
                    break
        for writer in writers.values():
            writer.close()
        result = finish_run(context, best, self.loop.evaluate)
        with _collectives_guard():
            _all_reduce(context.strategy, [0.0])  # every worker finishes together
        return dict(result, weights_sha256=weights_digest(context.model))

    def _train_epoch(self, epoch, steps, iterator, stop_on_signal, callbacks):
        """One epoch's steps and validation; returns the epoch's logs."""
        config, chief = self.context.config, self.cluster.is_chief
        totals = np.zeros(3)
        progress = keras.utils.Progbar(steps, verbose=1 if (config.verbose == 1 and chief) else 0)
        for step in range(steps):
            sums = self.loop.train_step(iterator, stop_on_signal.received is not None)
            if sums[3] > 0:
                run_dir = self.context.run_dir
                raise Interrupted(
                    stop_on_signal.received or signal.SIGTERM,
                    epoch,
                    run_dir=run_dir if chief else (self.chief_dir or run_dir),
                )
            if not math.isfinite(sums[0]):
                kept = self.context.checkpoint_dir if chief else "the chief's run directory"
                raise TrainingDivergedError(
                    f"loss became NaN/Inf at step {step + 1} of epoch {epoch + 1}; training "
                    f"stopped on every worker. The last good checkpoint is kept in {kept}. "
                    "Try a lower --learning_rate."
                )
            totals += sums[:3]
            progress.update(
                step + 1, [("loss", sums[0] / sums[2]), ("accuracy", sums[1] / sums[2])]
            )
        callbacks.on_test_begin()  # the moving average's weights, with --ema_momentum
        val_loss, val_accuracy = self.loop.evaluate(self.context.splits.validation)
        callbacks.on_test_end()
        optimizer = self.context.model.optimizer
        return dict(
            loss=totals[0] / totals[2],
            accuracy=totals[1] / totals[2],
            val_loss=val_loss,
            val_accuracy=val_accuracy,
            learning_rate=float(keras.ops.convert_to_numpy(optimizer.learning_rate)),
        )

    def _log_epoch(self, writers, epoch, logs):
        """TensorBoard scalars of the epoch, and (chief) one line on the terminal."""
        for name, prefix in (("train", ""), ("validation", "val_")):
            with writers[name].as_default(step=epoch):
                for metric in ("loss", "accuracy"):
                    tf.summary.scalar(f"epoch_{metric}", logs[prefix + metric])
                if name == "train":
                    tf.summary.scalar("epoch_learning_rate", logs["learning_rate"])
        config = self.context.config
        if self.cluster.is_chief and config.verbose:
            print(
                f"Epoch {epoch + 1}/{config.epochs} - "
                + " - ".join(f"{k}: {v:.4f}" for k, v in logs.items()),
                flush=True,
            )


def weights_digest(model):
    """SHA-256 of every weight's bytes, in order: equal digests = identical models."""
    digest = hashlib.sha256()
    for weight in model.get_weights():
        digest.update(np.ascontiguousarray(weight).tobytes())
    return digest.hexdigest()
