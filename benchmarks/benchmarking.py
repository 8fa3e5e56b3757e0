"""Throughput, memory, FLOP and approximation measurements (scripts/benchmark.py).

Each throughput configuration runs in its own process so peak RSS values do
not mix; within it: untimed warm-up, then the median of >= 5 timed windows.
"""

import json
import resource
import statistics
import time

import keras
import numpy as np
import tensorflow as tf

from benchmarks.softmax_baseline import SoftmaxAttentionClassifier
from relperf_tf.app import machine, training
from relperf_tf.app.precision import dtype_policy
from relperf_tf.layers import feature_maps
from relperf_tf.layers.random_features import default_nb_features, orthogonal_random_matrix

BENCH_MODELS = (
    "Performer",
    "NoposPerformer",
    "RelativePerformer",
    "ClippedRelativePerformer",
    "exact",
)


def cpu_label(info=None):
    """One line naming the CPU a row was measured on, e.g. 'AMD EPYC (family 25 model 1; avx2)'."""
    return machine.cpu_label(info, with_cores=False)


def resolved_nb_features(
    model_name, dim, heads, nb_features=None, pos_scales=4, position_kernel="favor"
):
    """The m a model uses: `nb_features`, or its default int(d·ln d) of the query width d.

    RelativePerformer's queries are wider than the content heads (dim/heads +
    2·2·pos_scales), so its default m is larger than the other models'; with
    an exact positional factor FAVOR+ sees the content heads only.
    """
    positional = model_name == "RelativePerformer" and position_kernel == "favor"
    qk_dim = dim // heads + (4 * pos_scales if positional else 0)
    return int(nb_features or default_nb_features(qk_dim))


def forward_flops(
    model_name,
    image_size,
    dim,
    depth,
    heads,
    nb_features=None,
    pos_scales=4,
    clipping_dist=8,
    channels=1,
    position_kernel="favor",
):
    """Analytic multiply-add FLOPs (×2) of one image's forward pass.

    The last block computes the class token's output only (its query against
    every key, its feed-forward): the classifier reads nothing else.
    """
    tokens = image_size * image_size + 1
    head_dim = dim // heads
    m = resolved_nb_features(model_name, dim, heads, nb_features, pos_scales, position_kernel)
    key_width = 0.5 if model_name == "ClippedRelativePerformer" else 1.0

    def block(queries):
        projections = 2 * dim * dim * (2 * queries + (1 + key_width) * tokens)  # q, output; k, v
        feed_forward = 2 * 2 * queries * dim * 4 * dim
        if model_name == "exact":
            return projections + feed_forward + 2 * 2 * queries * tokens * dim
        favor_heads = heads // 2 if model_name == "ClippedRelativePerformer" else heads
        # Per image, q and k are projected at the content width: RelativePerformer's
        # positional blocks are shared by the batch and projected once per step.
        # Features of q and k, then φ(K)ᵀV and φ(Q)·context.
        attention = favor_heads * 2 * m * head_dim * 2 * (queries + tokens)
        if model_name == "RelativePerformer" and position_kernel != "favor" and queries > 1:
            # Exact factor: T = φ(K) ⊗ [V, 1] mixed along columns (W) and rows
            # (H), then contracted with φ(Q); instead of φ(K)ᵀV and φ(Q)·context.
            attention = heads * 2 * 2 * tokens * m * head_dim
            attention += heads * 2 * tokens * m * (head_dim + 1) * (2 * image_size + 2)
        if model_name == "ClippedRelativePerformer":
            window = 2 * clipping_dist**2 - 2 * clipping_dist + 1
            attention += (heads // 2) * 2 * queries * (window + clipping_dist + 1) * head_dim
        return projections + feed_forward + attention

    embedding = 2 * tokens * channels * dim
    return (depth - 1) * block(tokens) + block(1) + embedding


# Models whose every GEMM `step_gemms` lists (the content-only FAVOR+ models).
FLOOR_MODELS = ("Performer", "NoposPerformer")


def step_gemms(mode, image_size, batch_size, dim, depth, heads, nb_features):
    """The matrix products one step of `Performer` / `NoposPerformer` runs.

    Returns `{(batch, rows, inner, cols): count}`, one product
    `[batch, rows, inner] × [batch, inner, cols]` per count. Forward: per block
    q, k, v, output and the two feed-forward Dense layers (rows = batch ·
    tokens; q, output and the feed-forward of the last block: the class token
    only), FAVOR+'s two projections (`[b·h·n, d] × [d, m]`), φ(K)ᵀV and
    φ(Q)·context per head. Training adds, per Dense, the input and weight
    gradients, and FAVOR+'s six backward products (the projection W is not
    trained). Element-wise work, the embedding and the classifier are left
    out: this is the part of a step no fusion removes.
    """
    tokens = image_size * image_size + 1
    head_dim, hidden, m, pairs = dim // heads, 4 * dim, nb_features, batch_size * heads
    gemms = {}

    def add(shape, count=1):
        gemms[shape] = gemms.get(shape, 0) + count

    def dense(rows, inner, cols, count=1):
        add((1, rows, inner, cols), count)
        if mode == "train":
            add((1, rows, cols, inner), count)  # input gradient
            add((1, inner, rows, cols), count)  # weight gradient

    def block(queries):
        rows, query_rows = batch_size * tokens, batch_size * queries
        dense(query_rows, dim, dim, 2)  # q, output
        dense(rows, dim, dim, 2)  # k, v
        dense(query_rows, dim, hidden)
        dense(query_rows, hidden, dim)
        add((1, batch_size * heads * queries, head_dim, m))  # W q'
        add((1, batch_size * heads * tokens, head_dim, m))  # W k'
        add((pairs, m, tokens, head_dim))  # φ(K)ᵀ V
        add((pairs, queries, m, head_dim))  # φ(Q) · context
        if mode == "train":
            add((1, batch_size * heads * queries, m, head_dim))  # ∂q through the projection
            add((1, batch_size * heads * tokens, m, head_dim))  # ∂k
            add((pairs, queries, head_dim, m))  # ∂φ(Q)
            add((pairs, tokens, head_dim, m))  # ∂φ(K)
            add((pairs, m, queries, head_dim))  # ∂context
            add((pairs, tokens, m, head_dim))  # ∂V

    for _ in range(depth - 1):
        block(tokens)
    block(1)
    return gemms


def gemm_seconds(shape, dtype="float32", jit_compile=False, repeats=5):
    """Seconds of one product `[b, r, i] × [b, i, c]` on fresh random operands.

    The fastest of `repeats` calls: a floor, so noise from the rest of the
    machine (which only ever slows a call down) is left out.
    """
    batch, rows, inner, cols = shape
    lead = (batch,) if batch > 1 else ()
    a = tf.cast(tf.random.normal(lead + (rows, inner)), dtype)
    b = tf.cast(tf.random.normal(lead + (inner, cols)), dtype)
    # CPU calls return when their result is computed; the full product is kept.
    matmul = tf.function(tf.linalg.matmul, jit_compile=jit_compile)
    matmul(a, b)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        matmul(a, b)
        times.append(time.perf_counter() - start)
    return min(times)


def gemm_floor(gemms, repeats=5):
    """Seconds a step's products alone take here: fp32 (the faster of XLA and plain TF) and bf16
    (plain TF, oneDNN).

    A step of the full model cannot be faster than its fp32 floor with these
    kernels; the bf16 floor is what mixed precision could at most reach.
    """
    fp32 = sum(
        count * min(gemm_seconds(shape, "float32", jit, repeats) for jit in (False, True))
        for shape, count in gemms.items()
    )
    bf16 = sum(
        count * gemm_seconds(shape, "bfloat16", False, repeats) for shape, count in gemms.items()
    )
    return dict(
        fp32=fp32,
        bf16=bf16,
        gflop=sum(2 * b * r * i * c * n for (b, r, i, c), n in gemms.items()) / 1e9,
    )


def matmul_peak_gflops(size=4096, repeats=5):
    """fp32 matmul throughput measured through TensorFlow in this process (the fastest of `repeats`
    calls)."""
    return 2 * size**3 / gemm_seconds((1, size, size, size), "float32", False, repeats) / 1e9


def build(model_name, image_size, batch_size, jit_compile, **hparams):
    """The compiled model of one configuration; `exact` is `SoftmaxAttentionClassifier`."""
    name = "Performer" if model_name == "exact" else model_name
    config = training.resolve_config(
        name,
        "fashion_mnist",
        batch_size=batch_size,
        jit_compile=jit_compile,
        attn_dropout=0.0,
        ff_dropout=0.0,
        seed=0,
        **hparams,
    )
    image_shape = (image_size, image_size, 1)
    if model_name != "exact":
        return training.build_compiled_model(
            config, tf.distribute.get_strategy(), image_shape=image_shape
        )
    model = SoftmaxAttentionClassifier(
        image_shape, num_classes=10, name="exact", **config.model_hparams()
    )
    model.build((None,) + image_shape)
    training.compile_model(model, config)
    return model


class _BatchClock(keras.callbacks.Callback):
    """Timestamps at the end of every training batch inside one `fit` call."""

    def __init__(self):
        super().__init__()
        self.stamps = []

    def on_train_batch_end(self, batch, logs=None):
        self.stamps.append(time.perf_counter())


def _window_seconds_per_step(stamps, window_steps):
    """Mean seconds/step of the last `window_steps` steps of one timed call.

    `stamps` are the end times of window_steps + 1 consecutive steps; the first
    step (which carries a call's own setup) only opens the window.
    """
    assert len(stamps) == window_steps + 1, (len(stamps), window_steps)
    return float(np.diff(stamps).mean())


def manual_train_step(model, jit_compile):
    """The hand-written step `fit` is compared with: loss, gradients, Adam."""

    @tf.function(jit_compile=jit_compile)
    def step(images, labels):
        with tf.GradientTape() as tape:
            logits = model(images, training=True)
            loss = tf.reduce_mean(model.loss(labels, logits))
        gradients = tape.gradient(loss, model.trainable_variables)
        model.optimizer.apply(gradients, model.trainable_variables)
        return loss

    return step


def time_config(
    model_name,
    mode,
    image_size,
    batch_size,
    jit_compile,
    repeats=5,
    window_steps=3,
    warmup=2,
    **hparams,
):
    """One configuration's measurements (run it in a fresh process).

    Training: after `warmup` steps of both, windows of `fit` (timed per batch
    by a callback, so `fit`'s per-call setup is not counted) alternate with
    windows of the same hand-written step (`manual_train_step`), so both see
    the same machine state; each reports the median of `repeats` windows, and
    their ratio is the overhead of `fit`.
    Inference: repeats windows of window_steps calls of the compiled forward.
    Serving: `time_serving` (the exported signature, XLA inside if
    `jit_compile`; image_size is the serving dataset's).
    """
    if mode == "serve":
        if image_size != serving_image_size():
            raise ValueError(
                f"serve rows run the exported {SERVING_DATASET} signature: "
                f"image_size={serving_image_size()}."
            )
        step, times, extra = time_serving(
            model_name, batch_size, repeats, window_steps, jit_compile=jit_compile, **hparams
        )
    else:
        step, times, extra = _time_model(
            model_name,
            mode,
            image_size,
            batch_size,
            jit_compile,
            repeats,
            window_steps,
            warmup,
            **hparams,
        )
    return _measurements(
        model_name, mode, image_size, batch_size, jit_compile, step, times, hparams, extra, repeats
    )


def _time_model(
    model_name, mode, image_size, batch_size, jit_compile, repeats, window_steps, warmup, **hparams
):
    """Median seconds per step, the windows, and extra fields of a train or infer row."""
    model = build(model_name, image_size, batch_size, jit_compile, **hparams)
    images = (
        np.random.default_rng(0).random((batch_size, image_size, image_size, 1)).astype("float32")
    )
    labels = np.arange(batch_size) % 10
    extra = {}
    if mode == "train":
        data = tf.data.Dataset.from_tensors((images, labels)).repeat().prefetch(2)
        manual = manual_train_step(model, jit_compile)

        def fit_window(steps):
            clock = _BatchClock()
            model.fit(
                data, steps_per_epoch=steps, epochs=1, verbose=0, callbacks=[clock], shuffle=False
            )
            return clock.stamps

        def manual_window(steps):
            stamps = []
            for _ in range(steps):
                manual(images, labels).numpy()
                stamps.append(time.perf_counter())
            return stamps

        fit_window(warmup)
        manual_window(warmup)
        times, manual_times = [], []
        for _ in range(repeats):
            times.append(_window_seconds_per_step(fit_window(window_steps + 1), window_steps))
            manual_times.append(
                _window_seconds_per_step(manual_window(window_steps + 1), window_steps)
            )
        step, manual_step = statistics.median(times), statistics.median(manual_times)
        extra = dict(manual_ms_per_step=1e3 * manual_step, fit_overhead=step / manual_step - 1)
    else:
        predict = tf.function(lambda x: model(x, training=False), jit_compile=jit_compile)
        predict(images).numpy()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            for _ in range(window_steps):
                out = predict(images)
            out.numpy()
            times.append((time.perf_counter() - start) / window_steps)
        step = statistics.median(times)
    return step, times, extra


def _measurements(
    model_name, mode, image_size, batch_size, jit_compile, step, times, hparams, extra, repeats
):
    """A result row: the timing, FLOP rate against this process's matmul peak, memory, and
    (content-only models) the GEMM floor."""
    # Read before the peak and floor measurements allocate their operands.
    peak_rss_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    dim, depth, heads = hparams.get("dim", 128), hparams.get("depth", 4), hparams.get("heads", 4)
    position_kernel = hparams.get("position_kernel", "favor")
    flops = forward_flops(
        model_name,
        image_size,
        dim,
        depth,
        heads,
        hparams.get("nb_features"),
        position_kernel=position_kernel,
    )
    flops_per_step = flops * batch_size * (3 if mode == "train" else 1)
    peak = matmul_peak_gflops()
    if model_name in FLOOR_MODELS and mode != "serve":
        m = resolved_nb_features(model_name, dim, heads, hparams.get("nb_features"))
        floor = gemm_floor(step_gemms(mode, image_size, batch_size, dim, depth, heads, m), repeats)
        extra.update(
            gemm_floor_ms=1e3 * floor["fp32"],
            gemm_floor_bf16_ms=1e3 * floor["bf16"],
            gemm_gflop=floor["gflop"],
        )
    achieved = flops_per_step / step / 1e9
    return dict(
        model=model_name,
        mode=mode,
        image_size=image_size,
        tokens=image_size**2 + 1,
        batch_size=batch_size,
        jit_compile=jit_compile,
        nb_features=None
        if model_name == "exact"
        else resolved_nb_features(
            model_name, dim, heads, hparams.get("nb_features"), position_kernel=position_kernel
        ),
        precision=dtype_policy(hparams.get("precision", "float32")),
        ms_per_step=1e3 * step,
        images_per_s=batch_size / step,
        gflops_per_s=achieved,
        matmul_peak_gflops=peak,
        fraction_of_peak=achieved / peak,
        peak_rss_gb=peak_rss_gb,
        cpu=cpu_label(),
        step_times_ms=[1e3 * t for t in times],
        **extra,
    )


# The dataset whose export signature the `serve` mode times (uint8 28×28×1 in,
# resized to the model's 32×32 inside the graph), as the shipped models serve.
SERVING_DATASET = "fashion_mnist"


def serving_image_size():
    """The model-side image size of a `serve` row (the dataset's, fixed)."""
    from relperf_tf.app import data as data_lib

    return data_lib.get_spec(SERVING_DATASET).image_shape[0]


def time_serving(
    model_name,
    batch_size,
    repeats=5,
    window_steps=3,
    latency_calls=200,
    jit_compile=False,
    **hparams,
):
    """The exported SavedModel's `serving_default` (what TF Serving runs), loaded back in this
    process.

    Batch 1: `latency_calls` single-image calls after a warm-up, each timed →
    p50 and p99 latency. Batch `batch_size`: the median of `repeats` windows
    of `window_steps` calls → images/s. uint8 images in, float32
    probabilities out, whatever runs inside; `jit_compile`: the export's
    model runs XLA-compiled (`export.export_saved_model`), the first call of
    each batch size compiles, outside the timed calls (`first_call_ms`: the
    first batch-1 call, compilation included).
    """
    import tempfile

    from relperf_tf.app import data as data_lib
    from relperf_tf.app import export

    spec = data_lib.get_spec(SERVING_DATASET)
    model = build(model_name, spec.image_shape[0], batch_size, False, **hparams)
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as folder:
        version = export.export_saved_model(
            model, SERVING_DATASET, model.embedding.embedding_type, folder, jit_compile=jit_compile
        )
        serve = tf.saved_model.load(version).signatures["serving_default"]
        one = tf.constant(rng.integers(0, 256, (1,) + spec.native_shape, dtype=np.uint8))
        many = tf.constant(rng.integers(0, 256, (batch_size,) + spec.native_shape, dtype=np.uint8))
        start = time.perf_counter()
        serve(images=one)["probabilities"].numpy()
        first_call = time.perf_counter() - start
        for _ in range(10):
            serve(images=one)["probabilities"].numpy()
        latencies = []
        for _ in range(latency_calls):
            start = time.perf_counter()
            serve(images=one)["probabilities"].numpy()
            latencies.append(time.perf_counter() - start)
        serve(images=many)["probabilities"].numpy()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            for _ in range(window_steps):
                out = serve(images=many)["probabilities"]
            out.numpy()
            times.append((time.perf_counter() - start) / window_steps)
    p50, p99 = np.percentile(latencies, [50, 99])
    return (
        statistics.median(times),
        times,
        dict(
            latency_p50_ms=1e3 * float(p50),
            latency_p99_ms=1e3 * float(p99),
            latency_calls=latency_calls,
            first_call_ms=1e3 * first_call,
        ),
    )


def _through_bfloat16(x):
    return tf.cast(tf.cast(x, tf.bfloat16), tf.float32)


def approximation_errors(
    query, key, value, features=(16, 32, 64, 128, 256, 512), draws=5, precision="float32"
):
    """Relative error of FAVOR+ attention vs exact softmax attention (of the float32 inputs) per
    feature count.

    Under `mixed_bfloat16` the kernel computes in float32 as in the models, but
    receives q, k, v rounded to bf16 (the Dense projections' output) and hands
    back its output rounded to bf16 (what the output projection reads).
    """
    exact = np.array(feature_maps.exact_attention(query, key, value))
    rounding = _through_bfloat16 if dtype_policy(precision) == "mixed_bfloat16" else tf.identity
    query, key, value = (rounding(tf.constant(x)) for x in (query, key, value))
    rows = []
    for m in features:
        errors = []
        for draw in range(draws):
            w = orthogonal_random_matrix(m, query.shape[-1], (draw, m))
            out = rounding(
                feature_maps.linear_attention(
                    feature_maps.softmax_kernel_features(query, w, True),
                    feature_maps.softmax_kernel_features(key, w, False),
                    value,
                )
            )
            errors.append(float(np.linalg.norm(np.array(out) - exact) / np.linalg.norm(exact)))
        rows.append(
            dict(
                nb_features=m, relative_error=statistics.mean(errors), std=statistics.pstdev(errors)
            )
        )
    return rows


def fashion_mnist_activations(data_dir=None, images=8):
    """q, k, v `[b, h, n, d]` of the reference Performer's first block on real images."""
    from relperf_tf.app import data as data_lib
    from relperf_tf.layers.favor_attention import split_heads
    from relperf_tf.models import build_model

    raw, _ = data_lib.raw_test_images("fashion_mnist", data_dir)
    x = data_lib.preprocess(raw[:images], "fashion_mnist", "linear")
    model = build_model("Performer", image_shape=(32, 32, 1), num_classes=10, seed=0)
    backbone = model.backbone
    pixels = np.reshape(x, (x.shape[0], -1, backbone.channels))  # [b, H·W, C], row-major
    tokens, _ = backbone.embed(pixels)  # the first block's input
    block = backbone.blocks[0]
    hidden = block._attention_norm(tokens)
    attention = block.attention
    return tuple(
        np.array(split_heads(dense(hidden), attention.num_heads))
        for dense in (attention._query_dense, attention._key_dense, attention._value_dense)
    )


def main_child(spec_json):
    """Entry point of the per-configuration subprocess: prints one JSON line."""
    spec = json.loads(spec_json)
    print("RESULT " + json.dumps(time_config(**spec)), flush=True)
