"""The shipped models' numbers as a record: each SavedModel's test accuracy and shift curve.

    python benchmarks/shipped_models.py saved_models/* --output=docs/records/shipped_models.json

The same measurements on other SavedModels (`scripts/export.py` of training runs) make other
records, named by `--output`, with a `--description` that the rendered page shows.

Test accuracy: the exported `serving_default` signature (raw uint8 images in, classes out)
over every test image of the model's dataset. Shift curve: `relperf_tf.app.shift` on the
SavedModel's `logits` signature (what is served), the dataset's test of
`relperf_tf.app.shift.SHIFT_TESTS` (Fashion-MNIST: label 1 "Trouser" with at least 8 empty
columns on both sides, shifted by −8 … 8; MNIST: every digit with at least 6, by −6 … 6), the
empty columns wrapped around. `docs/render.py` renders the record into the
README and docs/results.md.
"""

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import records  # noqa: E402


def test_accuracy(version_dir, dataset, data_dir=None, batch=1000):
    """Accuracy of the SavedModel's `serving_default` classes over the whole test split."""
    import tensorflow as tf

    from relperf_tf.app import data

    images, labels = data.raw_test_images(dataset, data_dir)
    loaded = tf.saved_model.load(version_dir)
    serve = loaded.signatures["serving_default"]
    classify = tf.function(lambda x: serve(images=x)["classes"], jit_compile=True)
    predicted = np.concatenate(
        [classify(tf.constant(images[i : i + batch])).numpy() for i in range(0, len(images), batch)]
    )
    return float(np.mean(predicted == labels)), int(len(labels))


def measure(path, data_dir=None):
    """One row: the model's folder name, dataset, test accuracy and shift curve."""
    from relperf_tf.app import export, shift

    version_dir = export.latest_version_dir(path)
    metadata = export.read_metadata(version_dir)
    dataset = metadata["dataset"]
    accuracy, count = test_accuracy(version_dir, dataset, data_dir)
    labels, max_shift = shift.SHIFT_TESTS[dataset]
    curve = shift.run_shift_experiment([path], list(labels), max_shift, data_dir)
    return dict(
        name=os.path.basename(os.path.normpath(path)),
        model=curve[0]["model"],
        dataset=dataset,
        test_accuracy=round(accuracy, 4),
        test_images=count,
        shift_labels=list(labels),
        shift_images=int(curve[0]["images"]),
        shift={int(r["shift"]): round(float(r["accuracy_mean"]), 4) for r in curve},
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", help="SavedModel folders (saved_models/<name>)")
    parser.add_argument("--output", default="docs/records/shipped_models.json")
    parser.add_argument("--data_dir", default=None)
    parser.add_argument("--description", default=None, help="what the rows are, for the page")
    args = parser.parse_args(argv)
    rows = []
    for path in args.paths:
        if not os.path.isdir(path):
            continue
        row = measure(path, args.data_dir)
        print(row, flush=True)
        rows.append(row)
    command = ["benchmarks/shipped_models.py"] + (argv or sys.argv[1:])
    record = dict(
        name=records.name_of(args.output),
        sittings=[records.provenance(command)],
        rows=[dict(row, sitting=0) for row in rows],
    )
    if args.description:
        record["description"] = args.description
    records.write(args.output, record)


if __name__ == "__main__":
    main()
