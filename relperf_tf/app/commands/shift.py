"""Shift robustness: scripts/shift_robustness.py RUN_DIR|SAVED_MODEL [...] --labels 1 --max_shift 8
--output shift.csv --plot shift.png"""

from absl import flags

from relperf_tf.app import cli, shift

flags.DEFINE_list("labels", ["1"], "Test labels to use (Fashion-MNIST 1 = Trouser).")
flags.DEFINE_integer(
    "max_shift", 8, "Largest shift in pixels; images need this many empty columns on each side."
)
flags.DEFINE_integer(
    "shift_step", 1, "Evaluate every this many pixels (±max_shift always included)."
)
flags.DEFINE_string("output", "shift.csv", "CSV of accuracy/loss per run and shift.")
flags.DEFINE_string("plot", None, "PNG plot of accuracy vs shift (optional).")
flags.DEFINE_string("data_dir", None, "TFDS data directory (default: the run's own).")
flags.DEFINE_list(
    "beside",
    [],
    "Shift CSVs measured before (e.g. saved_models/*/shift.csv, computed on each SavedModel): "
    "their curves at the same shifts are plotted and tabulated beside the new ones, not "
    "recomputed; --output holds the new curves only.",
)
FLAGS = flags.FLAGS


def main(argv):
    if len(argv) < 2:
        cli.fail(
            "usage: shift_robustness.py RUN_DIR|SAVED_MODEL [...] --labels=1 --max_shift=8 "
            "--output=shift.csv --plot=shift.png"
        )
    with cli.errors_to_exit_codes():
        try:
            labels = [int(label) for label in FLAGS.labels]
        except ValueError:
            raise ValueError(
                f"flag --labels={','.join(FLAGS.labels)} is not allowed; use class indices like 1 "
                "or 1,7."
            )
        shift.shifts(FLAGS.max_shift, FLAGS.shift_step)  # bad flags before any file is read
        for path in FLAGS.beside:
            try:
                shift.read_csv(path)
            except ValueError as error:
                raise ValueError(f"flag --beside: {error}") from None
        rows = shift.run_shift_experiment(
            argv[1:], labels, FLAGS.max_shift, FLAGS.data_dir, FLAGS.shift_step
        )
        shown = shift.rows_beside(rows, FLAGS.beside) + rows
        shift.write_csv(rows, FLAGS.output)
        if FLAGS.plot:
            shift.plot(shown, FLAGS.plot)
    print(shift.curve_table(shown))


def run():
    """Console entry point `relperf-shift`."""
    cli.run(main)


if __name__ == "__main__":
    run()
