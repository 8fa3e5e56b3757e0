#!/usr/bin/env python
"""Test metrics of finished runs: scripts/evaluate.py RUN_DIR [RUN_DIR ...] --output results.csv"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import fast_malloc  # noqa: E402,F401  (restarts with malloc settings that suit TensorFlow)
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from absl import flags  # noqa: E402

from relperf_tf import cli, evaluation  # noqa: E402

flags.DEFINE_string("output", "results.csv", "CSV to append one row per run to.")
flags.DEFINE_string("data_dir", None, "TFDS data directory (default: the run's own).")
FLAGS = flags.FLAGS


def main(argv):
    if len(argv) < 2:
        cli.fail("usage: evaluate.py RUN_DIR [RUN_DIR ...] --output=results.csv")
    with cli.errors_to_exit_codes():
        rows = evaluation.evaluate_into_csv(argv[1:], FLAGS.output, FLAGS.data_dir)
    for row in rows:
        print(f"{row['run_dir']}: {row['model']} test_accuracy={row['test_accuracy']:.4f} test_loss={row['test_loss']:.4f}")
    print(f"{len(rows)} run(s) added to {FLAGS.output}")


if __name__ == "__main__":
    cli.run(main)
