"""1-D shift and length tests of sequence runs: scripts/sequence_shift.py RUN_DIR [...]
--max_offset=64 --output=sequence_shift.csv"""

import csv
import io
import os

from absl import flags

from relperf_tf.app import atomic, canvas_shift, cli, runs
from relperf_tf.models import display_name

flags.DEFINE_integer("max_offset", 64, "Largest offset s of the sequence in its padded canvas.")
flags.DEFINE_integer("offset_step", 8, "Evaluate every this many offsets (max_offset included).")
flags.DEFINE_list(
    "length_factors",
    ["1", "1.25", "2"],
    "Canvas lengths of the length test, × the training length.",
)
flags.DEFINE_integer("count", 1000, "Test sequences to use (the first ones of the test split).")
flags.DEFINE_string("output", "sequence_shift.csv", "CSV: one row per run, test and placement.")
flags.DEFINE_string("data_dir", None, "TFDS data directory (default: the run's own).")
FLAGS = flags.FLAGS
COLUMNS = ("model", "causal", "test", "offset", "canvas_length", "accuracy", "max_logit_change")


def _check_flags():
    for name, minimum in (("max_offset", 0), ("offset_step", 1), ("count", 1)):
        if FLAGS[name].value < minimum:
            raise ValueError(
                f"flag --{name}={FLAGS[name].value} is not allowed; use an integer >= {minimum}."
            )
    try:
        factors = [float(f) for f in FLAGS.length_factors]
    except ValueError:
        factors = []
    if not factors or min(factors) < 1.0:
        raise ValueError(
            f"flag --length_factors={','.join(FLAGS.length_factors)} is not allowed; use numbers "
            ">= 1 like 1,1.25,2."
        )
    return factors


def main(argv):
    if len(argv) < 2:
        cli.fail("usage: sequence_shift.py RUN_DIR [...] --max_offset=64 --output=FILE.csv")
    with cli.errors_to_exit_codes():
        factors = _check_flags()
        rows = []
        for run_dir in runs.find_runs(argv[1:]):
            hparams = runs.load_hparams(run_dir)
            if hparams.get("layout") != "sequence":
                raise ValueError(
                    f"RUN_DIR {run_dir!r} trained layout={hparams.get('layout', 'image')!r}; "
                    "this test needs layout='sequence' runs."
                )
            model = runs.load_best_model(run_dir, hparams)
            pixels, labels = canvas_shift.test_sequences(
                hparams["dataset"],
                FLAGS.count,
                FLAGS.data_dir or hparams.get("data_dir"),
                hparams["embedding_type"],
            )
            length = pixels.shape[1]
            name = display_name(hparams["model"], hparams.get("position_kernel"))
            tests = (
                (
                    "shift",
                    canvas_shift.shift_placements(length, FLAGS.max_offset, FLAGS.offset_step),
                ),
                ("length", canvas_shift.length_placements(length, factors)),
            )
            for test, placements in tests:
                for row in canvas_shift.canvas_rows(model, pixels, labels, placements):
                    rows.append(dict(model=name, causal=hparams.get("causal"), test=test, **row))
                    print(
                        f"{name:<28} causal={hparams.get('causal')!s:<5} {test:<6} "
                        f"s={row['offset']:<3} L={row['canvas_length']:<5} "
                        f"accuracy {row['accuracy']:.3f}  "
                        f"max |Δlogit| {row['max_logit_change']:.2e}"
                    )
        os.makedirs(os.path.dirname(os.path.abspath(FLAGS.output)), exist_ok=True)
        text = io.StringIO()
        writer = csv.DictWriter(text, COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
        atomic.write_text(FLAGS.output, text.getvalue())


def run():
    """Console entry point `relperf-sequence-shift`."""
    cli.run(main)


if __name__ == "__main__":
    run()
