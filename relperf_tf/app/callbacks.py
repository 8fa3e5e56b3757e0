"""Callbacks that make runs resumable: metrics CSV, best checkpoint, NaN guard, signals."""

import csv
import io
import math
import os
import signal

import keras

from relperf_tf.app import atomic

COLUMNS = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy", "learning_rate")


class MetricsCSVLogger(keras.callbacks.Callback):
    """One row per finished epoch in `metrics.csv`, consistent across resumes.

    On (re)start it keeps the rows of epochs before the one training resumes
    from (set by `BackupAndRestore`, which must come earlier in the callback
    list) and drops any later row, so the file has no gap and no duplicate.
    """

    def __init__(self, path, initial_epoch=None):
        super().__init__()
        self.path = path
        self.initial_epoch = initial_epoch  # None: the epoch BackupAndRestore resumes from
        self.rows = []

    def on_train_begin(self, logs=None):
        start = (
            self.initial_epoch
            if self.initial_epoch is not None
            else getattr(self.model, "_initial_epoch", None) or 0
        )
        rows = []
        if os.path.exists(self.path):
            with open(self.path, newline="") as f:
                rows = [row for row in csv.DictReader(f) if int(row["epoch"]) < start]
        self.rows = rows
        self._write()

    def on_epoch_end(self, epoch, logs=None):
        logs = dict(logs or {})
        if "learning_rate" not in logs:
            logs["learning_rate"] = float(
                keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)
            )
        self.rows.append({"epoch": epoch, **{k: logs.get(k, "") for k in COLUMNS[1:]}})
        self._write()

    def _write(self):
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(self.rows)
        atomic.write_text(self.path, text.getvalue())  # a kill never leaves half a file


class BestCheckpoint(keras.callbacks.Callback):
    """Saves the model with the best validation accuracy; stops after `patience`.

    Its state (best value, epochs without improvement) is rebuilt from the
    metrics history on resume, so a resumed run neither overwrites a better
    checkpoint nor restarts its patience.
    """

    def __init__(self, path, history, patience=20, monitor="val_accuracy"):
        super().__init__()
        self.path = path
        self.history = history  # a MetricsCSVLogger
        self.patience = patience
        self.monitor = monitor
        self.best = -math.inf
        self.best_epoch = None
        self.wait = 0

    def on_train_begin(self, logs=None):
        self.best, self.best_epoch, self.wait = -math.inf, None, 0
        for row in self.history.rows:
            self._update(int(row["epoch"]), float(row[self.monitor]))

    def _update(self, epoch, value):
        if value > self.best:
            self.best, self.best_epoch, self.wait = value, epoch, 0
            return True
        self.wait += 1
        return False

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        value = logs.get(self.monitor)
        if value is None or not math.isfinite(value):
            return
        if not all(math.isfinite(logs[k]) for k in ("loss", "val_loss") if k in logs):
            return  # weights that met NaN/Inf (their accuracy is argmax of NaN) are never best
        if self._update(epoch, float(value)):
            atomic.save_model(self.model, self.path)  # the previous best stays whole if this fails
        if self.patience and self.wait >= self.patience:
            self.model.stop_training = True


class StopOnNonFinite(keras.callbacks.Callback):
    """Stops training at the first NaN/Inf loss and remembers where."""

    def __init__(self):
        super().__init__()
        self.bad_batch = None

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self.bad_batch = batch
            self.model.stop_training = True


class Interrupted(Exception):
    """Training stopped by SIGTERM/SIGINT at a point where every file is whole."""

    def __init__(self, signum, epoch, run_dir=None):
        self.signum, self.epoch, self.run_dir = signum, epoch, run_dir
        super().__init__(f"interrupted by {signal.Signals(signum).name} during epoch {epoch + 1}")


class StopOnSignal(keras.callbacks.Callback):
    """Turns SIGTERM/SIGINT into `Interrupted`, raised only between batches.

    The handlers only record the signal; the exception leaves `fit` at the
    next train or validation batch end, or at the end of the epoch after the
    callbacks before this one (backup, metrics, best checkpoint: keep this one
    last) have written their files, never in the middle of a write. Raising
    skips `on_train_end`, so `BackupAndRestore` keeps its backup for
    `--resume`. A second SIGINT interrupts at once (KeyboardInterrupt).
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)
    # What `_check` raises (a subclass may raise a subclass of Interrupted).
    error = Interrupted

    def __init__(self):
        super().__init__()
        self.received = None
        self.epoch = 0
        self._previous = {}

    def _handle(self, signum, frame):
        if self.received == signal.SIGINT and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.received = signum

    def __enter__(self):
        self._previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def __deepcopy__(self, memo):
        # Keras Tuner deep-copies callbacks for each trial: every copy must be
        # the instance whose handler records the signal.
        return self

    def __exit__(self, *exc):
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        return False

    def check(self):
        """Raises `error` if a signal was received (between batches, or wherever the caller knows
        files are whole)."""
        if self.received is not None:
            raise self.error(self.received, self.epoch)

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch
        self.check()

    def on_train_batch_end(self, batch, logs=None):
        self.check()

    def on_test_batch_end(self, batch, logs=None):
        self.check()

    def on_epoch_end(self, epoch, logs=None):
        self.epoch = epoch + 1
        self.check()
