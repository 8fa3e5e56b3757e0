"""Classify PNG/JPEG files with an exported model: scripts/predict.py MODEL_DIR IMAGE [IMAGE ...]
[--json]"""

import json
import os
import sys

from absl import flags

from relperf_tf.app import cli, export

flags.DEFINE_boolean("json", False, "Print machine-readable JSON instead of a table.")
FLAGS = flags.FLAGS


def read_image(path, shape):
    """Decodes a PNG/JPEG/GIF/BMP/WebP into uint8 `shape` (H, W, C); ValueError naming the problem.

    Grey/RGB(A) are converted to the model's channels; 16-bit PNGs are scaled
    to 8 bits and CMYK JPEGs converted to RGB by the decoder.
    """
    import tensorflow as tf

    if os.path.isdir(path):
        raise ValueError(f"IMAGE {path!r} is a directory, not an image file.")
    if not os.path.isfile(path):
        raise ValueError(f"IMAGE {path!r} does not exist.")
    if os.path.getsize(path) == 0:
        raise ValueError(f"IMAGE {path!r} is an empty file.")
    try:
        image = tf.io.decode_image(tf.io.read_file(path), expand_animations=False, dtype=tf.uint8)
    except tf.errors.InvalidArgumentError as error:
        if "Unknown image file format" in error.message:
            raise ValueError(f"IMAGE {path!r} is not a PNG, JPEG, GIF, BMP or WebP file.") from None
        reason = error.message.split("[Op:")[0].split("}}")[-1].strip()
        raise ValueError(f"IMAGE {path!r} is truncated or corrupt ({reason}).") from None
    except tf.errors.OpError as error:
        raise ValueError(
            f"IMAGE {path!r} cannot be read "
            f"({error.message.split('[Op:')[0].split('}}')[-1].strip()})."
        ) from None
    height, width, channels = shape
    if channels == 1 and image.shape[-1] in (3, 4):
        image = tf.image.rgb_to_grayscale(image[..., :3])
    elif channels == 3 and image.shape[-1] in (1, 2):
        image = tf.image.grayscale_to_rgb(image[..., :1])
    image = image[..., :channels]
    if tuple(image.shape[:2]) != (height, width):
        raise ValueError(
            f"IMAGE {path!r} is {image.shape[1]}×{image.shape[0]} pixels; this model takes "
            f"{width}×{height} images (no silent resize)."
        )
    return image


def main(argv):
    if len(argv) < 3:
        cli.fail("usage: predict.py MODEL_DIR IMAGE [IMAGE ...] [--json]")
    import tensorflow as tf

    with cli.errors_to_exit_codes():
        version_dir = export.latest_version_dir(argv[1])
        metadata = export.read_metadata(version_dir)
    # Every readable image is classified; each unreadable one gets its own
    # error line, and the exit code says that some failed.
    paths, images, failed = [], [], 0
    for path in argv[2:]:
        try:
            images.append(read_image(path, metadata["input_shape"]))
            paths.append(path)
        except ValueError as error:
            print(f"error: {error}", file=sys.stderr)
            failed += 1
    results = []
    if images:
        serve = tf.saved_model.load(version_dir).signatures["serving_default"]
        outputs = serve(images=tf.stack(images))
        for path, probabilities, index in zip(
            paths, outputs["probabilities"].numpy(), outputs["classes"].numpy()
        ):
            results.append(
                dict(
                    file=path,
                    class_index=int(index),
                    class_name=metadata["class_names"][index],
                    probability=float(probabilities[index]),
                )
            )
    if FLAGS.json:
        print(json.dumps(results, indent=2))
    else:
        for r in results:
            print(f"{r['file']}\t{r['class_name']}\t{r['probability']:.4f}")
    if failed:
        sys.exit(cli.EXIT_BAD_INPUT)


def run():
    """Console entry point `relperf-predict`."""
    cli.run(main)


if __name__ == "__main__":
    run()
