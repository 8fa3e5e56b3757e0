"""TF Model Garden's `KernelAttention` (FAVOR+, feature_transform="exp") in the peer workload.

Runs in benchmarks/peers/.venvs/model_garden (tf-models-official, no deps, with
tf-keras): the layer subclasses tf-keras' MultiHeadAttention, so the model is
tf-keras too. Settings: `plain` (tf.function, the documented default) and
`xla` (jit_compile). Its random features are drawn once (redraw=False, the
layer's default).
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ["TF_USE_LEGACY_KERAS"] = "1"  # tf.keras = tf-keras, which the layer is written for
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import workload  # noqa: E402

SETTINGS = ("plain", "xla")


def build_model(tf, tf_keras, kernel_attention):
    w = workload.WORKLOAD
    dim, heads, pixels = w["dim"], w["heads"], w["image_size"] ** 2

    class Block(tf_keras.layers.Layer):
        """x + Attention(LN(x)); x + Dense(dim)(GELU(Dense(4·dim)(LN(x))))."""

        def __init__(self, seed, **kwargs):
            super().__init__(**kwargs)
            self.attention_norm = tf_keras.layers.LayerNormalization(epsilon=1e-5)
            self.attention = kernel_attention.KernelAttention(
                num_heads=heads,
                key_dim=dim // heads,
                feature_transform="exp",
                num_random_features=w["nb_features"],
                seed=seed,
            )
            self.ff_norm = tf_keras.layers.LayerNormalization(epsilon=1e-5)
            self.ff_hidden = tf_keras.layers.Dense(w["ff_multiplier"] * dim, activation="gelu")
            self.ff_output = tf_keras.layers.Dense(dim)

        def call(self, x, training=False):
            hidden = self.attention_norm(x)
            x = x + self.attention(hidden, hidden, training=training)
            return x + self.ff_output(self.ff_hidden(self.ff_norm(x)))

    class Classifier(tf_keras.Model):
        """Pixels as tokens, learned absolute positions, class token first, linear head on it."""

        def __init__(self):
            super().__init__()
            self.embedding = tf_keras.layers.Dense(dim)
            self.blocks = [Block(seed=i) for i in range(w["depth"])]
            self.head = tf_keras.layers.Dense(w["num_classes"])

        def build(self, input_shape):
            self.positions = self.add_weight(
                "positions",
                shape=(pixels, dim),
                initializer=tf_keras.initializers.RandomNormal(stddev=0.02),
            )
            self.class_token = self.add_weight(
                "class_token", shape=(1, 1, dim), initializer="zeros"
            )
            super().build(input_shape)

        def call(self, images, training=False):
            x = tf.reshape(images, (-1, pixels, w["channels"]))
            x = self.embedding(x) + self.positions[None]
            x = tf.concat([tf.tile(self.class_token, (tf.shape(x)[0], 1, 1)), x], axis=1)
            for block in self.blocks:
                x = block(x, training=training)
            return self.head(x[:, 0])

    return Classifier()


def main():
    mode, setting = workload.parse_args(SETTINGS)
    import importlib.metadata

    import tensorflow as tf
    import tf_keras
    from official.nlp.modeling.layers import kernel_attention

    tf.config.threading.set_intra_op_parallelism_threads(workload.THREADS["intra_op"])
    tf.config.threading.set_inter_op_parallelism_threads(workload.THREADS["inter_op"])
    model = build_model(tf, tf_keras, kernel_attention)
    images, labels = workload.batch(mode)
    images, labels = tf.constant(images), tf.constant(labels)
    model(images[:1])
    jit = setting == "xla"
    train_step = None
    if mode == "train":
        optimizer = tf_keras.optimizers.Adam(workload.WORKLOAD["learning_rate"])
        loss_fn = tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True)

        @tf.function(jit_compile=jit)
        def train_step(x, y):
            with tf.GradientTape() as tape:
                loss = loss_fn(y, model(x, training=True))
            optimizer.apply_gradients(
                zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables)
            )
            return loss

    step = workload.tf_step(tf, model, mode, jit, images, labels, train_step)
    seconds, windows = workload.seconds_per_step(step)
    official = importlib.metadata.version("tf-models-official")
    version = f"tf-models-official {official}, TF {tf.__version__}, tf-keras {tf_keras.__version__}"
    workload.report("Model Garden KernelAttention", version, mode, setting, seconds, windows)


if __name__ == "__main__":
    main()
