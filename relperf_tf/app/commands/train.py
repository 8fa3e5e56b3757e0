"""Train one model: python scripts/train.py --model=NoposPerformer --dataset=fashion_mnist"""

import json

from absl import flags

from relperf_tf.app import cli, training

cli.define_run_flags()
# absl.logging already defines --log_dir ("directory to write logfiles into"): it
# is our run root too, with the reference implementation's default layout.
flags.FLAGS.set_default("log_dir", training.RunSettings.log_dir)
cli.define_setting_flags(
    s
    for s in training.run_settings()
    if s.name in ("layout", "exp_name", "version", "resume", "init_from")
)
# The sequence task's own settings (`--causal`), generated from its constructor.
cli.define_setting_flags(training.SEQUENCE_SETTINGS)
flags.DEFINE_boolean(
    "progress_bar", True, "Keras progress bar; --noprogress_bar prints one line per epoch."
)
FLAGS = flags.FLAGS


def main(argv):
    cli.reject_positional(argv)
    with cli.errors_to_exit_codes():
        cli.require("model", "dataset")
        config = training.resolve_config(
            FLAGS.model,
            FLAGS.dataset,
            FLAGS.preset,
            **{
                **cli.explicit_settings(),
                "log_dir": FLAGS.log_dir,
                "verbose": 1 if FLAGS.progress_bar else 2,
            },
        )
        training.check_run(config)
        training.split_cpu(config.cpu_replicas)
        result = training.train(config)
    print(json.dumps(result, indent=2))


def run():
    """Console entry point `relperf-train`."""
    cli.run(main)


if __name__ == "__main__":
    run()
