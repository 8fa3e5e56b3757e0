"""Test-set evaluation of finished runs into one CSV table."""

import csv
import dataclasses
import io
import os

from relperf_tf.app import atomic, runs
from relperf_tf.app.training import TrainConfig
from relperf_tf.layers.favor_kernel import upgrade_legacy_options

HPARAM_COLUMNS = tuple(
    f.name for f in dataclasses.fields(TrainConfig) if f.name not in ("verbose",)
)
COLUMNS = ("run_dir",) + HPARAM_COLUMNS + ("parameters", "test_loss", "test_accuracy")


def evaluate_run(run_dir, data_dir=None):
    """One CSV row: run dir, hyperparameters, parameter count, test loss/accuracy."""
    hparams = upgrade_legacy_options(runs.load_hparams(run_dir))  # runs from before `feature_map`
    model = runs.load_best_model(run_dir, hparams)
    loss, accuracy = model.evaluate(runs.test_pipeline(hparams, data_dir), verbose=0)
    row = {"run_dir": run_dir, **{name: hparams.get(name) for name in HPARAM_COLUMNS}}
    row.update(
        parameters=model.count_params(), test_loss=float(loss), test_accuracy=float(accuracy)
    )
    return row


def evaluate_into_csv(paths, output, data_dir=None):
    """Evaluates every run under `paths` not yet in `output` and appends its row.

    Returns:
        The rows added (runs already in the CSV are skipped, not duplicated).
    """
    run_dirs = runs.find_runs(paths)
    done = set()
    if os.path.exists(output):
        with open(output, newline="") as f:
            reader = csv.DictReader(f)
            if tuple(reader.fieldnames or ()) != COLUMNS:
                raise ValueError(
                    f"--output {output!r} is a CSV with other columns; choose a new file."
                )
            done = {row["run_dir"] for row in reader}
    rows = [evaluate_run(run_dir, data_dir) for run_dir in run_dirs if run_dir not in done]
    # Every run is evaluated before the file is touched; then the old rows and
    # the new ones replace it in one rename (a failure leaves it as it was).
    old = open(output, newline="").read() if os.path.exists(output) else ""
    text = io.StringIO(old)
    text.seek(0, io.SEEK_END)
    writer = csv.DictWriter(text, fieldnames=COLUMNS)
    if not old:
        writer.writeheader()
    writer.writerows(rows)
    atomic.write_text(output, text.getvalue())
    return rows
