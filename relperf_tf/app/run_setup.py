"""What a run trains with: distribution strategy, optimizer, the compiled model, the data."""

import re

import keras
import tensorflow as tf

from relperf_tf.app import data as data_lib
from relperf_tf.app import direct_steps
from relperf_tf.app.losses import make_loss
from relperf_tf.app.run_config import STRATEGIES, build_run_model, init_weights_path
from relperf_tf.schedules import WarmupSchedule


def split_cpu(replicas):
    """Splits the CPU into `replicas` logical devices (before TF initialises them)."""
    if replicas <= 1:
        return
    cpu = tf.config.list_physical_devices("CPU")[0]
    current = tf.config.get_logical_device_configuration(cpu)
    if current and len(current) == replicas:
        return
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * replicas
    )


def make_strategy(name, cpu_replicas=1):
    """`default`, `mirrored` (all GPUs, else the logical CPUs) or `auto` (mirrored with > 1 device).

    `multi_worker` has its own training loop (`multi_worker.train`).
    """
    if name not in STRATEGIES[:3]:
        raise ValueError(f"flag --strategy={name!r} is not allowed; use one of {STRATEGIES[:3]}.")
    gpus = tf.config.list_logical_devices("GPU")
    cpus = tf.config.list_logical_devices("CPU")
    devices = [d.name for d in gpus] or [d.name for d in cpus[: max(cpu_replicas, 1)]]
    if name == "mirrored" or (name == "auto" and len(devices) > 1):
        # Logical CPUs share memory: reduce on one device instead of collective
        # ops (whose instance keys also clash between strategies in one process).
        cross_device_ops = None if gpus else tf.distribute.ReductionToOneDevice()
        return tf.distribute.MirroredStrategy(devices, cross_device_ops=cross_device_ops)
    return tf.distribute.get_strategy()


def make_optimizer(
    learning_rate=1e-3, schedule="constant", warmup=0, total_steps=None, ema_momentum=0.0
):
    """Adam(β₁ 0.9, β₂ 0.98) with global gradient-norm clipping at 0.5; with `ema_momentum`
    μ > 0 it also keeps the weights' moving average w̄ ← μ·w̄ + (1 − μ)·w after every step."""
    return keras.optimizers.Adam(
        learning_rate=WarmupSchedule(learning_rate, schedule, warmup, total_steps),
        beta_1=0.9,
        beta_2=0.98,
        global_clipnorm=0.5,
        use_ema=ema_momentum > 0,
        ema_momentum=ema_momentum or 0.99,  # Keras' default, unused without EMA
    )


def ema_callbacks(config):
    """`[SwapEMAWeights]` when the run averages its weights: validation, `best.keras` and the
    test see the average (place it after the backup, which keeps the trained weights)."""
    if not config.ema_momentum:
        return []
    return [keras.callbacks.SwapEMAWeights(swap_on_epoch=True)]


def total_steps(config):
    """The run's optimizer steps (epochs × steps per epoch), when the schedule needs them."""
    if config.schedule != "cosine":
        return None
    return config.epochs * config.steps_per_epoch


def compile_model(model, config):
    model.compile(
        optimizer=make_optimizer(
            config.learning_rate,
            config.schedule,
            config.warmup,
            total_steps(config),
            config.ema_momentum,
        ),
        loss=make_loss(config.label_smoothing),
        metrics=["accuracy"],
        jit_compile=config.jit_compile,
    )
    return direct_steps.install(model)


def load_splits(config, embedding_type=None):
    """The run's train/validation/test pipelines (`data.load`) for its dataset, batch size,
    seed, layout and embedding (`embedding_type` overrides it: a tuner trial's)."""
    return data_lib.load(
        config.dataset,
        config.batch_size,
        embedding_type or config.embedding_type,
        config.seed,
        config.data_dir,
        layout=config.layout,
        augment_shift=config.augment_shift,
        augment_flip=config.augment_flip,
    )


def build_compiled_model(config, strategy, image_shape=None):
    """The run's model, built and compiled under `strategy` (`image_shape` overrides the data's)."""
    with strategy.scope():
        model = build_run_model(config, image_shape)
        compile_model(model, config)
        if config.init_from is not None:
            warm_start(model, config.init_from)
    return model


def warm_start(model, source):
    """Sets every variable of `model` (FAVOR+ draws included) to `--init_from`'s, in order;
    raises ValueError naming the flag when the two models' variables differ in number or
    shape (Keras' own `load_weights` would keep fresh weights for what it cannot match).

    A source with fewer transformer blocks deepens into `model` (`deepened_weights`): the
    warm-started model computes what the source did, and its added blocks learn from there.
    """
    path = init_weights_path(source)
    try:
        loaded = keras.models.load_model(path, compile=False, safe_mode=True)
    except Exception as error:  # zip, HDF5 and deserialisation errors alike
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
        raise ValueError(
            f"flag --init_from={source!r}: {path} cannot be loaded ({reason})."
        ) from None
    if 0 < block_count(loaded.weights) < block_count(model.weights):
        weights = deepened_weights(model, loaded, source)
    else:
        weights = [w.numpy() for w in loaded.weights]
    shapes = [tuple(w.shape) for w in model.weights]
    if [w.shape for w in weights] != shapes:
        raise ValueError(
            f"flag --init_from={source!r}: {path} does not fit this model ({len(weights)} "
            f"variables, this model {len(shapes)} or other shapes); use a run of the same model, "
            "dim, heads and features, and a depth no larger than this one's."
        )
    for variable, value in zip(model.weights, weights):
        variable.assign(value)


# The variables whose zeros make a pre-LN `TransformerBlock` the identity: x + 0, then x + 0
# (the attention's output projection is `attention_output`, MultiHeadAttention's name; `output`
# before relperf_tf 0.3).
_BLOCK_OUTPUTS = ("attention/attention_output/", "attention/output/", "ff_output/")


def block_count(variables):
    """How many `block_<i>/` transformer blocks `variables` (paths) belong to."""
    heads = {v.path.split("/")[0] for v in variables}
    return sum(1 for head in heads if re.fullmatch(r"block_\d+", head))


def block_sources(source_depth, depth):
    """Where a deepened model's blocks come from: `[source block or None]` per block.

    Each of the first `depth - source_depth` source blocks is followed by a new block (None),
    so the source's order is kept and its last block stays last (it reads the class token).
    """
    added = depth - source_depth
    sources = []
    for index in range(source_depth):
        sources.append(index)
        if index < added:
            sources.append(None)
    return sources


def deepened_weights(model, loaded, source):
    """`model`'s variables (in order) from a shallower `loaded` model of the same family: the
    source's blocks where `block_sources` puts them, every other variable by its path, and
    the added blocks their own fresh initialisation (FAVOR+ draws included) with the
    attention and feed-forward output projections zeroed, so each starts as the identity."""
    source_depth, depth = block_count(loaded.weights), block_count(model.weights)
    if depth - source_depth > source_depth - 1:
        raise ValueError(
            f"flag --init_from={source!r}: a warm start can deepen a model of {source_depth} "
            f"blocks to at most {2 * source_depth - 1}, not {depth}; use --depth <= "
            f"{2 * source_depth - 1} or a deeper source."
        )
    by_path = {w.path: w.numpy() for w in loaded.weights}
    sources = block_sources(source_depth, depth)
    weights = []
    for variable in model.weights:
        head, _, rest = variable.path.partition("/")
        if re.fullmatch(r"block_\d+", head):
            origin = sources[int(head[len("block_") :])]
            if origin is None:
                value = keras.ops.convert_to_numpy(variable)
                if rest.startswith(_BLOCK_OUTPUTS):
                    value = value * 0
                weights.append(value)
                continue
            path = f"block_{origin}/{rest}"
        else:
            path = variable.path
        if path not in by_path:
            return [w.numpy() for w in loaded.weights]  # not this family: the shape check says so
        weights.append(by_path[path])
    return weights
