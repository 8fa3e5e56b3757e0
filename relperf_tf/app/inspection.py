"""Pictures of what a model learned: positional kernels and attention maps as PNGs.

For a run directory (its best checkpoint), a preset name, a preset folder or a
`.keras` file: one test image is read as the model reads it, and
`models.attention_maps` gives the numbers; this module only loads and draws.
"""

import os

import numpy as np

from relperf_tf.app import atomic, runs
from relperf_tf.app import data as data_lib
from relperf_tf.models import ImageClassifier, attention_maps, presets


def load_model(source):
    """(model, dataset, embedding_type, output folder) of a run directory, preset name or path."""
    is_run = os.path.isfile(os.path.join(source, "checkpoints", "best.keras"))
    if is_run or (
        os.path.isdir(source) and not os.path.exists(os.path.join(source, "model.keras"))
    ):
        hparams = runs.load_hparams(source)
        model = runs.load_best_model(source, hparams)
        return model, hparams["dataset"], hparams["embedding_type"], source
    path = presets.model_file(source)
    model = presets.load(path, ImageClassifier, compile=False)
    folder = os.path.dirname(os.path.abspath(path))
    # Shipped models: Fashion-MNIST with linear embeddings (their README and hparams.json).
    hparams_path = os.path.join(folder, "hparams.json")
    hparams = runs.load_hparams(folder) if os.path.exists(hparams_path) else {}
    return (
        model,
        hparams.get("dataset", "fashion_mnist"),
        hparams.get("embedding_type", "linear"),
        folder,
    )


def test_image(dataset, embedding_type, index, data_dir=None):
    """Test image `index` as uint8 `[H, W, C]`, as model input `[H', W', C]`, and its label."""
    images, labels = data_lib.raw_test_images(dataset, data_dir)
    if not 0 <= index < len(images):
        raise ValueError(
            f"flag --image_index={index} is not allowed; use 0 … {len(images) - 1} "
            f"({dataset}'s test images)."
        )
    pixels = np.asarray(data_lib.preprocess(images[index : index + 1], dataset, embedding_type))
    return images[index], pixels[0], int(labels[index])


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_kernels(kernels, grid_shape, path, window=8):
    """exp(P − max P) per head (columns) and block (rows), over Δr (vertical), Δc (horizontal)
    within ±`window` (the centre is Δ = 0)."""
    plt = _pyplot()
    blocks = list(kernels)
    heads = kernels[blocks[0]].shape[0]
    rows, cols = (min(n, window + 1) for n in grid_shape)
    centre = [n - 1 for n in grid_shape]
    figure, axes = plt.subplots(
        len(blocks), heads, figsize=(1.6 * heads, 1.7 * len(blocks)), dpi=110, squeeze=False
    )
    for b, name in enumerate(blocks):
        for h in range(heads):
            logits = kernels[name][h]
            logits = logits[
                centre[0] - rows + 1 : centre[0] + rows, centre[1] - cols + 1 : centre[1] + cols
            ]
            axis = axes[b, h]
            axis.imshow(
                np.exp(logits - logits.max()),
                cmap="magma",
                vmin=0,
                vmax=1,
                extent=(-(cols - 0.5), cols - 0.5, rows - 0.5, -(rows - 0.5)),
            )
            axis.set_xticks([])
            axis.set_yticks([])
            if b == 0:
                axis.set_title(f"head {h}", fontsize=8)
            if h == 0:
                axis.set_ylabel(name, fontsize=8)
    figure.suptitle(
        f"learned positional kernel exp(P_row(Δr) + P_col(Δc)), |Δ| ≤ {rows - 1}, centre Δ = 0"
    )
    figure.tight_layout()
    _save(figure, path)


def plot_maps(maps, backbone, image, query, path):
    """The query's attention over the image, per head (columns) and block (rows)."""
    plt = _pyplot()
    blocks = list(maps)
    heads = maps[blocks[0]].shape[1]
    figure, axes = plt.subplots(
        len(blocks),
        heads + 1,
        figsize=(1.6 * (heads + 1), 1.7 * len(blocks)),
        dpi=110,
        squeeze=False,
    )
    for b, name in enumerate(blocks):
        grid = attention_maps.pixel_map(backbone, maps[name][0])  # [heads, H, W]
        axes[b, 0].imshow(image[..., 0] if image.shape[-1] == 1 else image, cmap="gray")
        if query != "class":
            axes[b, 0].plot(query[1], query[0], "r+", markersize=8)
        axes[b, 0].set_ylabel(name, fontsize=8)
        for h in range(heads):
            axes[b, h + 1].imshow(grid[h], cmap="viridis")
            if b == 0:
                axes[b, h + 1].set_title(f"head {h}", fontsize=8)
        for axis in axes[b]:
            axis.set_xticks([])
            axis.set_yticks([])
    title = "class token" if query == "class" else f"pixel (row {query[0]}, column {query[1]})"
    figure.suptitle(f"attention of the {title} over the image")
    figure.tight_layout()
    _save(figure, path)


def _save(figure, path):
    """One PNG, written whole or not at all."""
    with atomic.replacing(path) as staging:
        figure.savefig(staging, format="png")
    _pyplot().close(figure)


def inspect(source, output_dir=None, image_index=0, pixel=(16, 16), data_dir=None):
    """Writes the PNGs of `source` into `output_dir` (default: `<source>/inspect/`); returns
    their paths."""
    model, dataset, embedding_type, folder = load_model(source)
    backbone = model.backbone
    attention_maps.token_index(backbone, tuple(pixel))  # a bad pixel fails before any work
    _, pixels, _ = test_image(dataset, embedding_type, image_index, data_dir)
    output_dir = output_dir or os.path.join(folder, "inspect")
    os.makedirs(output_dir, exist_ok=True)
    written = []
    kernels = attention_maps.positional_kernels(backbone)
    if kernels:
        written.append(os.path.join(output_dir, "positional_kernels.png"))
        plot_kernels(kernels, backbone.grid_shape, written[-1])
    flat = pixels.reshape(1, -1, pixels.shape[-1]).astype("float32")
    for query, name in (("class", "attention_class_token.png"), (tuple(pixel), None)):
        name = name or f"attention_pixel_{query[0]}_{query[1]}.png"
        maps = attention_maps.attention_maps(backbone, flat, query)
        written.append(os.path.join(output_dir, name))
        plot_maps(maps, backbone, pixels, query, written[-1])
    return written
