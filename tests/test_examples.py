"""The examples run as a user runs them (`python examples/NAME.py --quick`, a fresh
interpreter), and the checks they print hold: the cache gives the full causal pass, the
circular 2-D model is equivariant to rolls of the patch grid, the exact feature map gives
MultiHeadAttention's logits. The Fashion-MNIST ones read the fixture's TFDS directory; the
causal one reads MNIST where `make setup` prepared it (TFDS's default directory)."""

import os
import re
import subprocess
import sys

from tests.conftest import REPO


def run_example(name, data_dir=None):
    env = dict(os.environ)
    if data_dir:
        env["TFDS_DATA_DIR"] = data_dir
    result = subprocess.run(
        [sys.executable, os.path.join(REPO, "examples", name), "--quick"],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def printed_number(output, label):
    match = re.search(re.escape(label) + r"\s*([-+0-9.eE]+)", output)
    assert match, f"{label!r} not printed:\n{output[-2000:]}"
    return float(match.group(1))


def test_sequence_classification(fashion_mnist_dir):
    output = run_example("sequence_classification.py", fashion_mnist_dir)
    assert 0.0 <= printed_number(output, "test accuracy:") <= 1.0


def test_causal_model_cache_gives_the_full_pass():
    output = run_example("causal_model.py")
    assert printed_number(output, "cache vs full pass:") < 1e-4
    assert "generated pixel levels:" in output


def test_vit_is_equivariant_to_rolls_of_the_patch_grid(fashion_mnist_dir):
    output = run_example("vit_fashion_mnist.py", fashion_mnist_dir)
    assert printed_number(output, "features of rolled images minus rolled features:") < 1e-4


def test_swap_keeps_multi_head_attention_logits():
    output = run_example("swap_multi_head_attention.py")
    assert printed_number(output, "largest logit difference") < 1e-5
    assert "fine-tuned" in output
