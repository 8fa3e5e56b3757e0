"""The paper's shift-robustness experiment (arXiv:2102.07680, section 4).

Test images (after the 32×32 resize) of chosen labels with at least
`max_shift` all-zero columns on both sides are shifted horizontally by
s ∈ [−max_shift, max_shift]; the empty columns wrap to the other side, so no
object pixel is lost. Per run and shift: accuracy and loss, mean and std.
"""

import csv
import io
import os

import numpy as np

from relperf_tf.app import atomic, export, runs
from relperf_tf.app import data as data_lib
from relperf_tf.models import display_name

SHIFTABLE_DATASETS = ("mnist", "fashion_mnist")
SHIFT_TESTS = {"fashion_mnist": ((1,), 8), "mnist": (tuple(range(10)), 6)}
"""Each dataset's shift test, `(labels, max_shift)`: the paper's on Fashion-MNIST (label 1
"Trouser", ±8), and on MNIST every digit with at least 6 empty columns on each side, ±6."""
CSV_COLUMNS = (
    "run_dir",
    "model",
    "dataset",
    "labels",
    "shift",
    "images",
    "accuracy_mean",
    "accuracy_std",
    "loss_mean",
    "loss_std",
)


def empty_border_mask(images, max_shift):
    """Which images `[N, H, W, C]` have >= max_shift all-zero columns on each side."""
    empty_columns = np.all(images == 0, axis=(1, 3))  # [N, W]
    return np.all(empty_columns[:, :max_shift], axis=1) & np.all(
        empty_columns[:, -max_shift:], axis=1
    )


def shift_images(images, shift):
    """Moves images `[N, H, W, C]` right by `shift` columns (left if negative), wrapping."""
    return np.roll(images, shift, axis=2)


def select_images(dataset, labels, max_shift, data_dir=None):
    """Raw test images (uint8, native size) and labels that qualify for shifting."""
    if dataset not in SHIFTABLE_DATASETS:
        raise ValueError(
            f"dataset={dataset!r} is not allowed for the shift experiment; use one of "
            f"{SHIFTABLE_DATASETS}."
        )
    if max_shift < 1:
        raise ValueError(f"--max_shift={max_shift} is not allowed; use an integer >= 1.")
    images, targets = data_lib.raw_test_images(dataset, data_dir)
    keep = np.isin(targets, labels)
    resized = np.array(data_lib.preprocess(images[keep], dataset, "lookup"))
    qualify = empty_border_mask(resized, max_shift)
    if not qualify.any():
        raise ValueError(
            f"no {dataset} test image with --labels={list(labels)} has {max_shift} empty columns "
            "on both sides; lower --max_shift or choose other labels."
        )
    return images[keep][qualify], targets[keep][qualify]


def shifts(max_shift, step=1):
    """−max_shift … max_shift every `step` pixels from 0, always including ±max_shift."""
    if step < 1:
        raise ValueError(f"--shift_step={step} is not allowed; use an integer >= 1.")
    return sorted(
        {*range(0, max_shift + 1, step), *range(0, -max_shift - 1, -step), max_shift, -max_shift}
    )


def shift_curve(
    predict, images, labels, dataset, embedding_type, max_shift, batch_size=256, step=1
):
    """Rows {shift, accuracy_mean/std, loss_mean/std} for one model.

    `predict`: model inputs `[n, 32, 32, C]` → logits `[n, classes]` (NumPy).
    """
    import keras

    inputs = np.array(data_lib.preprocess(images, dataset, embedding_type))
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction=None)
    rows = []
    for shift in shifts(max_shift, step):
        moved = shift_images(inputs, shift)
        logits = np.concatenate(
            [predict(moved[i : i + batch_size]) for i in range(0, len(moved), batch_size)]
        )
        correct = (np.argmax(logits, axis=1) == labels).astype("float64")
        losses = np.array(loss_fn(labels, logits), dtype="float64")
        rows.append(
            dict(
                shift=shift,
                images=len(labels),
                accuracy_mean=correct.mean(),
                accuracy_std=correct.std(),
                loss_mean=losses.mean(),
                loss_std=losses.std(),
            )
        )
    return rows


def _sources(paths):
    """(path, info, load) for every run directory and exported SavedModel under `paths`.

    info: model (display name), dataset, embedding_type, data_dir; load():
    the model's predict function. A SavedModel is read through its `logits`
    signature, so the experiment measures exactly what is served.
    """
    sources = []
    saved_models = [p for p in paths if _is_saved_model(p)]
    for path in saved_models:
        version_dir = export.latest_version_dir(path)
        metadata = export.read_metadata(version_dir)
        info = dict(
            model=display_name(metadata.get("model", "?"), metadata.get("position_kernel")),
            dataset=metadata["dataset"],
            embedding_type=metadata["embedding_type"],
            data_dir=None,
        )

        def load(version_dir=version_dir):
            import tensorflow as tf

            loaded = tf.saved_model.load(version_dir)  # kept: the signature reads its variables
            # The served graph, XLA-compiled here (about 3× faster on 2 CPU cores).
            logits = tf.function(
                lambda x: loaded.signatures["logits"](pixels=x)["logits"], jit_compile=True
            )
            return lambda x: logits(tf.constant(x)).numpy()

        sources.append((os.path.abspath(version_dir), info, load))
    run_paths = [p for p in paths if p not in saved_models]
    for run_dir in runs.find_runs(run_paths) if run_paths else []:
        h = runs.load_hparams(run_dir)
        info = dict(
            model=display_name(h["model"], h.get("position_kernel")),
            dataset=h["dataset"],
            embedding_type=h["embedding_type"],
            data_dir=h.get("data_dir"),
        )

        def load(run_dir=run_dir, hparams=h):
            model = runs.load_best_model(run_dir, hparams)
            return lambda x: model.predict(x, batch_size=len(x), verbose=0)

        sources.append((run_dir, info, load))
    return sources


def _is_saved_model(path):
    """A SavedModel directory, or TF Serving's folder of numbered versions."""
    if os.path.exists(os.path.join(path, "saved_model.pb")):
        return True
    versions = [n for n in (os.listdir(path) if os.path.isdir(path) else []) if n.isdigit()]
    return any(os.path.exists(os.path.join(path, n, "saved_model.pb")) for n in versions)


def run_shift_experiment(paths, labels, max_shift, data_dir=None, step=1):
    """Shift curves of every run and SavedModel under `paths`: a list of CSV rows."""
    shifts(max_shift, step)  # checks step before any model is loaded
    sources = _sources(paths)
    for path, info, _ in sources:
        if info["dataset"] not in SHIFTABLE_DATASETS:
            raise ValueError(
                f"{path} was trained on {info['dataset']!r}; the shift experiment needs one of "
                f"{SHIFTABLE_DATASETS}."
            )
    selected = {}
    rows = []
    for path, info, load in sources:
        dataset = info["dataset"]
        if dataset not in selected:
            selected[dataset] = select_images(
                dataset, labels, max_shift, data_dir or info["data_dir"]
            )
        images, targets = selected[dataset]
        curve = shift_curve(
            load(), images, targets, dataset, info["embedding_type"], max_shift, step=step
        )
        for row in curve:
            rows.append(
                dict(
                    run_dir=path,
                    model=info["model"],
                    dataset=dataset,
                    labels=" ".join(map(str, labels)),
                    **row,
                )
            )
    return rows


def write_csv(rows, path):
    """Writes `rows` to `path` in one rename: a failure leaves the old file whole."""
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=CSV_COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
    atomic.write_text(path, text.getvalue())


_NUMBERS = dict(
    shift=int, images=int, accuracy_mean=float, accuracy_std=float, loss_mean=float, loss_std=float
)


def read_csv(path):
    """The rows of a CSV `write_csv` wrote (numbers as numbers); ValueError naming the file when
    it is missing or has other columns."""
    try:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            if tuple(reader.fieldnames or ()) != CSV_COLUMNS:
                raise ValueError(f"{path!r} is not a shift CSV (columns {reader.fieldnames}).")
            rows = list(reader)
    except OSError as error:
        raise ValueError(f"{path!r} cannot be read ({error.strerror}).") from None
    for row in rows:
        row.update({name: kind(row[name]) for name, kind in _NUMBERS.items()})
    return rows


def rows_beside(rows, paths):
    """Curves measured before (each path a `write_csv` file, e.g. a shipped model's
    `shift.csv`), at the dataset, labels and shifts of `rows`, to draw and tabulate beside them.

    Raises ValueError naming `--beside` when a file's curves are of another dataset or labels.
    """
    dataset, labels = rows[0]["dataset"], rows[0]["labels"]
    wanted = {row["shift"] for row in rows}
    beside = []
    for path in paths:
        found = read_csv(path)
        if not found or {(r["dataset"], r["labels"]) for r in found} != {(dataset, labels)}:
            raise ValueError(
                f"flag --beside={path!r} is not allowed: its curves are not of dataset "
                f"{dataset!r} and labels {labels!r}, as this experiment's."
            )
        beside += [r for r in found if r["shift"] in wanted]
    return beside


def source_name(run_dir):
    """A curve's source in words: a SavedModel's folder (not its version number), or a run's
    version directory."""
    parts = os.path.normpath(run_dir).split(os.sep)
    return parts[-2] if parts[-1].isdigit() and len(parts) > 1 else parts[-1]


def curve_labels(rows):
    """`{run_dir: label}`: each curve's model, with its source when two curves share a model."""
    models = {}
    for row in rows:
        models.setdefault(row["run_dir"], row["model"])
    names = list(models.values())
    return {
        run_dir: f"{model} [{source_name(run_dir)}]" if names.count(model) > 1 else model
        for run_dir, model in models.items()
    }


def curve_table(rows):
    """The curves as a text table: one line per curve, accuracy at each shift."""
    labels = curve_labels(rows)
    shift_values = sorted({row["shift"] for row in rows})
    width = max(len(label) for label in labels.values())
    lines = [f"{'accuracy at shift':<{width}} " + " ".join(f"{s:+6d}" for s in shift_values)]
    for run_dir, label in labels.items():
        accuracy = {r["shift"]: r["accuracy_mean"] for r in rows if r["run_dir"] == run_dir}
        cells = " ".join(
            f"{accuracy[s]:6.3f}" if s in accuracy else f"{'':6}" for s in shift_values
        )
        lines.append(f"{label:<{width}} {cells}")
    return "\n".join(lines)


def plot(rows, path):
    """Accuracy vs shift, one line (with ±std band) per run, labelled by model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4.5), dpi=120)
    by_run = {}
    for row in rows:
        by_run.setdefault(row["run_dir"], []).append(row)
    labels = curve_labels(rows)
    for run_dir, run_rows in by_run.items():
        shifts = np.array([r["shift"] for r in run_rows])
        mean = np.array([r["accuracy_mean"] for r in run_rows])
        (line,) = axis.plot(shifts, mean, marker="o", label=labels[run_dir])
        sem = np.array([r["accuracy_std"] for r in run_rows]) / np.sqrt(run_rows[0]["images"])
        axis.fill_between(shifts, mean - sem, mean + sem, color=line.get_color(), alpha=0.2)
    first = rows[0]
    axis.set(
        xlabel="horizontal shift (pixels)",
        ylabel="test accuracy",
        ylim=(-0.02, 1.02),
        title=(
            f"Shift robustness: {first['dataset']}, labels {first['labels']}, "
            f"{first['images']} images"
        ),
    )
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
