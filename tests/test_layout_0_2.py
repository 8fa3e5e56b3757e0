"""Files written by relperf_tf 0.2 (before the layers took MultiHeadAttention's full contract)
load into today's layers and compute the same numbers: `tests/data/layout_0_2/make.py`."""

import os

import keras
import numpy as np
import pytest

from relperf_tf.layers import FavorAttention, RelativeFavorAttention

pytestmark = pytest.mark.all_backends

DATA = os.path.join(os.path.dirname(__file__), "data", "layout_0_2")


def test_a_model_of_the_layers_loads_with_its_optimizer_and_outputs():
    expected = np.load(os.path.join(DATA, "expected.npz"))
    model = keras.saving.load_model(os.path.join(DATA, "layers.keras"))
    np.testing.assert_allclose(
        model.predict(expected["inputs"], verbose=0), expected["layers"], atol=1e-5
    )
    favor, exact, paper = [layer for layer in model.layers if isinstance(layer, FavorAttention)][:3]
    # 0.2's defaults, kept by the files: seed 0, the paper's kernel, given key_dim.
    assert favor.seed == 0 and favor.key_dim == 4
    assert isinstance(exact, RelativeFavorAttention) and exact.position_kernel == "exact"
    assert paper.position_kernel == "favor" and paper.pos_scales == 2
    assert model.optimizer.iterations.numpy() == 1


def test_a_sequence_model_loads_and_computes_the_same():
    expected = np.load(os.path.join(DATA, "expected.npz"))
    model = keras.saving.load_model(os.path.join(DATA, "sequence_relative_exact.keras"))
    batch = {"pixels": expected["pixels"], "padding_mask": expected["padding_mask"]}
    np.testing.assert_allclose(model.predict(batch, verbose=0), expected["sequence"], atol=1e-5)
