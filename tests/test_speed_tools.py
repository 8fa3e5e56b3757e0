"""The GEMM-rate and user-script benchmarks: their tables against hand computation, one engine
measured for real on tiny shapes, bad flags."""

import subprocess
import sys

import pytest

from benchmarks import gemm_rates, user_script
from tests.conftest import REPO


def test_gemm_table_rates_ratios_and_gemm_time():
    results = dict(
        engines=["openblas", "tf-xla"],
        repeats=3,
        modes={
            "train": [
                dict(shape=[1, 100, 10, 20], count=3, seconds={"openblas": 1e-3, "tf-xla": 2e-3}),
                dict(shape=[4, 10, 10, 10], count=1, seconds={"openblas": 4e-4, "tf-xla": 1e-4}),
            ]
        },
    )
    lines = gemm_rates.section(results, "a CPU")
    first = next(line for line in lines if line.startswith("| (100×10)·(10×20)"))
    # 2·100·10·20 = 40 000 FLOP in 1 ms = 0.04 GFLOP/s; XLA half as fast
    assert first == "| (100×10)·(10×20) | 3 | 0 | 0 (0.50) |"
    batched = next(line for line in lines if line.startswith("| 4×(10×10)·(10×10)"))
    assert batched.endswith("(4.00) |")
    total = next(line for line in lines if line.startswith("| **GEMM time**"))
    # openblas 3·1 + 0.4 = 3.4 ms; XLA 3·2 + 0.1 = 6.1 ms
    assert total == "| **GEMM time** | | 3 ms | 6 ms (0.56) |"


@pytest.mark.parametrize("engine", ["openblas", "tf-xla"])
def test_an_engine_times_each_product_in_its_own_process(engine):
    seconds = gemm_rates.measure(engine, [[1, 64, 32, 16], [2, 8, 8, 8]], repeats=2, timeout=300)
    assert len(seconds) == 2 and all(0 < s < 1 for s in seconds)


def test_step_shapes_are_the_reference_step():
    gemms = gemm_rates.shapes("train")
    # [16·1 025, 128] × [128, 128]: q, k, v, output of three blocks and k, v of the last (the
    # class token's block), forward and input gradient; their weight gradients [128, 16 400] ×
    # [16 400, 128] once each
    assert gemms[(1, 16 * 1025, 128, 128)] == 2 * (3 * 4 + 2)
    assert gemms[(1, 128, 16 * 1025, 128)] == 3 * 4 + 2


def test_user_script_table_is_relative_to_the_command():
    rows = [
        dict(variant="command", seconds=1.0),
        dict(variant="user", seconds=0.8),
        dict(variant="user-default", failed="boom"),
    ]
    lines = user_script.section(rows, "a CPU")
    assert "| command | 1000 | 16.0 | 1.00× |" in lines
    assert "| user | 800 | 20.0 | 1.25× |" in lines
    assert "| user-default | — | — | failed: boom |" in lines


@pytest.mark.parametrize(
    "script, flag",
    [
        ("benchmarks/gemm_rates.py", "--engines=openblas,gpu"),
        ("benchmarks/gemm_rates.py", "--repeats=0"),
        ("benchmarks/user_script.py", "--variants=command,mine"),
        ("benchmarks/user_script.py", "--steps=1"),
    ],
)
def test_bad_flags_fail_in_one_line_naming_the_flag(script, flag, tmp_path):
    before = open(f"{REPO}/docs/benchmarks.md").read()
    done = subprocess.run(
        [sys.executable, f"{REPO}/{script}", flag, "--record"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert done.returncode == 2
    error = done.stderr.strip().splitlines()[-1]
    assert flag.split("=")[0] in error and "error:" in error
    assert open(f"{REPO}/docs/benchmarks.md").read() == before
