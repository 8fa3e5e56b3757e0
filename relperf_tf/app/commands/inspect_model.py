"""Pictures of what a model learned: scripts/inspect_model.py RUN_DIR|PRESET|MODEL.keras
[--image_index 0] [--pixel 16,16] [--output_dir DIR]"""

from absl import flags

from relperf_tf.app import cli, inspection

flags.DEFINE_integer("image_index", 0, "The test image whose attention maps are drawn.")
flags.DEFINE_list("pixel", ["16", "16"], "The query pixel (row, column) of the second map.")
flags.DEFINE_string("output_dir", None, "Where the PNGs go (default: <source>/inspect/).")
flags.DEFINE_string("data_dir", None, "TFDS data directory (default: the run's own).")
FLAGS = flags.FLAGS


def main(argv):
    if len(argv) != 2:
        cli.fail(
            "usage: inspect_model.py RUN_DIR|PRESET|MODEL.keras [--image_index=0] [--pixel=16,16] "
            "[--output_dir=DIR]"
        )
    with cli.errors_to_exit_codes():
        if len(FLAGS.pixel) != 2 or not all(p.strip().isdigit() for p in FLAGS.pixel):
            raise ValueError(
                f"flag --pixel={','.join(FLAGS.pixel)} is not allowed; use ROW,COLUMN like 16,16."
            )
        pixel = tuple(int(p) for p in FLAGS.pixel)
        try:
            written = inspection.inspect(
                argv[1], FLAGS.output_dir, FLAGS.image_index, pixel, FLAGS.data_dir
            )
        except ValueError as error:
            if "query=" in str(error):  # the pixel outside the model's grid
                raise ValueError(f"flag --pixel={','.join(FLAGS.pixel)}: {error}") from None
            raise
    for path in written:
        print(path)


def run():
    """Console entry point `relperf-inspect`."""
    cli.run(main)


if __name__ == "__main__":
    run()
