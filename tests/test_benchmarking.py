"""Benchmark bookkeeping: FLOP counts, window medians, targets met or not."""

import os

import numpy as np
import pytest

from benchmarks import benchmarking, report


def render(results, path):
    """docs/render.py's benchmark section of `results`, written to `path` (plots beside it)."""
    lines = report.render_lines(results, os.path.dirname(str(path)))
    open(path, "w").write("\n".join(lines) + "\n")


def test_resolved_features_follow_each_models_query_width():
    # Content heads of 32: int(32·ln 32) = 110; RelativePerformer's queries add
    # 2·2·pos_scales = 16 positional features: int(48·ln 48) = 185.
    assert benchmarking.resolved_nb_features("Performer", 128, 4) == 110
    assert benchmarking.resolved_nb_features("RelativePerformer", 128, 4) == 185
    assert benchmarking.resolved_nb_features("RelativePerformer", 128, 4, nb_features=110) == 110


def test_reference_forward_flops_match_the_issue():
    # The speed issue counted about 2.1 GFLOP per image forward at the reference
    # config, with every block computing every token. The last block computes
    # the class token only (k, v and FAVOR+'s key side still for all tokens):
    # 3 full blocks ≈ 1.57 GFLOP + ≈ 0.11 for the fourth.
    flops = benchmarking.forward_flops("Performer", 32, 128, 4, 4, nb_features=110)
    assert 1.6e9 < flops < 1.75e9
    assert benchmarking.forward_flops("exact", 32, 128, 4, 4) > flops


def _gflop(gemms, keep=lambda shape: True):
    return (
        sum(2 * b * r * i * c * n for (b, r, i, c), n in gemms.items() if keep((b, r, i, c))) / 1e9
    )


def test_step_gemms_are_the_analytic_flops():
    # Forward products = the analytic forward FLOPs less the embedding (a
    # rank-1 product), for the whole batch.
    batch, dim = 2, 128
    forward = benchmarking.step_gemms("infer", 32, batch, dim, 4, 4, 110)
    analytic = (
        batch
        * (benchmarking.forward_flops("Performer", 32, dim, 4, 4, nb_features=110) - 2 * 1025 * dim)
        / 1e9
    )
    assert np.isclose(_gflop(forward), analytic)
    # Training: each Dense product gains its input and weight gradients (3×);
    # FAVOR+'s four forward products gain six backward ones (2.5×), W being fixed.
    train = benchmarking.step_gemms("train", 32, batch, dim, 4, 4, 110)

    def favor(shape):
        return shape[0] > 1 or 110 in shape[2:]

    assert np.isclose(
        _gflop(train, lambda s: not favor(s)), 3 * _gflop(forward, lambda s: not favor(s))
    )
    assert np.isclose(_gflop(train, favor), 2.5 * _gflop(forward, favor))
    # Per block: q, k, v and output (4 products at dim × dim), depth 4; the
    # last block's q and output for the class token alone.
    assert forward[(1, batch * 1025, dim, dim)] == 4 * 3 + 2
    assert forward[(1, batch, dim, dim)] == 2


def test_gemm_floor_times_every_product_in_both_precisions():
    gemms = {(1, 64, 8, 16): 2, (3, 16, 8, 4): 1}
    floor = benchmarking.gemm_floor(gemms, repeats=5)
    assert floor["fp32"] > 0 and floor["bf16"] > 0
    assert np.isclose(floor["gflop"], (2 * 2 * 64 * 8 * 16 + 2 * 3 * 16 * 8 * 4) / 1e9)
    # The matmul peak is the same timing of one square product.
    assert benchmarking.matmul_peak_gflops(size=64) > 0


def test_window_skips_the_step_that_carries_call_setup():
    # A call's first step (8 s: its setup) only opens the window of 3 steps.
    stamps = np.cumsum([8.0, 1.0, 2.0, 3.0])
    assert benchmarking._window_seconds_per_step(list(stamps), window_steps=3) == 2.0


def row(
    model,
    mode,
    tokens,
    images_per_s,
    rss=2.0,
    jit=True,
    remat=False,
    batch=16,
    overhead=0.01,
    m=110,
):
    size = int(round((tokens - 1) ** 0.5))
    return dict(
        model=model,
        mode=mode,
        image_size=size,
        tokens=tokens,
        batch_size=batch,
        jit_compile=jit,
        remat=remat,
        nb_features=m,
        ms_per_step=1e3 * batch / images_per_s,
        images_per_s=images_per_s,
        gflops_per_s=1.0,
        fraction_of_peak=0.1,
        peak_rss_gb=rss,
        fit_overhead=overhead,
    )


def test_targets_use_the_best_setting_and_say_met_or_not(tmp_path):
    rows = [
        row("Performer", "train", 1025, 20.0, jit=False),
        row("Performer", "train", 1025, 30.0),
        row("Performer", "infer", 1025, 50.0),
        row("RelativePerformer", "train", 1025, 25.0),
        row("RelativePerformer", "train", 1025, 21.0, m=185),
        row("ClippedRelativePerformer", "train", 1025, 14.0, overhead=0.08),
        row("Performer", "train", 4097, 2.0, rss=6.0, batch=4),
        row("Performer", "train", 4097, 1.0, rss=2.0, batch=4, remat=True),
        row("Performer", "train", 16385, 0.25, rss=3.5, batch=4, remat=True),
    ]
    path = tmp_path / "bench.md"
    render(dict(throughput=rows), str(path))
    text = path.read_text()
    assert "| Performer training ≥ 27 img/s (stretch ≥ 38) | 30.0 img/s (XLA) | yes |" in text
    assert "| Performer inference ≥ 105 img/s | 50.0 img/s (XLA) | no |" in text
    # One line per feature count measured: the issue's m = 110 and the model's own default.
    assert (
        "| RelativePerformer training ≥ 0.8× Performer | 0.83× (XLA, m = 110 vs 110) | yes |"
        in text
    )
    assert (
        "| RelativePerformer training ≥ 0.8× Performer | 0.70× (XLA, m = 185 vs 110) | no |" in text
    )
    assert (
        "| ClippedRelativePerformer training ≥ 0.5× Performer | 0.47× (XLA, m = 110 vs 110) | no |"
        in text
    )
    assert "| RelativePerformer | train | 32² | 1025 | 16 | XLA | 185 |" in text
    assert "in < 4 GB peak RSS | 3.50 GB (XLA+remat) | yes |" in text
    assert "(worst of 4,097→16,385) | 4.00× | yes |" in text
    assert "+8.0 % (ClippedRelativePerformer, XLA) | no |" in text


def test_gemm_floor_bounds_the_performer_targets(tmp_path):
    # 16 images in 800 ms; the step's products alone take 640 ms (fp32) and
    # 400 ms (bf16): at most 25 and 40 img/s.
    train = dict(
        row("Performer", "train", 1025, 20.0),
        gemm_floor_ms=640.0,
        gemm_floor_bf16_ms=400.0,
        gemm_gflop=96.0,
    )
    path = tmp_path / "bench.md"
    render(dict(throughput=[train, row("Performer", "infer", 1025, 50.0)]), str(path))
    text = path.read_text()
    assert (
        "| Performer training ≥ 27 img/s (stretch ≥ 38) | 20.0 img/s (XLA); its GEMMs alone allow "
        "≤ 25.0 img/s in fp32 | no |" in text
    )
    assert "| Performer inference ≥ 105 img/s | 50.0 img/s (XLA) | no |" in text
    assert "| Performer | train | 16 | XLA | 800 | 96.0 | 640 (25.0) | 400 (40.0) | 160 |" in text
    # Rows without a measured floor render no floor section.
    render(dict(throughput=[row("Performer", "train", 1025, 20.0)]), str(path))
    assert "GEMM floor" not in path.read_text()


def test_bad_benchmark_flags_fail_in_one_line_and_write_nothing(tmp_path):
    import os
    import subprocess
    import sys

    script = os.path.join(os.path.dirname(__file__), "..", "scripts", "benchmark.py")
    output = tmp_path / "bench.json"
    cases = (
        ("--nb_features=0", "--nb_features=0"),
        ("--repeats=3", "--repeats=3"),
        ("--precision=float16", "--precision='float16'"),
        ("--modes=serve,train", "--image_sizes=16,32"),
    )
    for flag, named in cases:
        result = subprocess.run(
            [
                sys.executable,
                script,
                flag,
                "--image_sizes=16,32" if "serve" in flag else "--image_sizes=32",
                f"--output={output}",
                "--noapproximation",
            ],
            capture_output=True,
            text=True,
        )
        assert result.returncode != 0
        error = result.stderr.strip().splitlines()[-1]
        assert error.startswith("error: flag " + named) and "allowed" in error
    assert not output.exists()


@pytest.mark.slow
def test_a_tiny_configuration_measures_its_row_and_gemm_floor():
    hparams = dict(dim=8, depth=1, heads=2, nb_features=4)
    row = benchmarking.time_config(
        "Performer", "train", 4, 2, False, repeats=5, window_steps=1, **hparams
    )
    assert row["tokens"] == 17 and row["nb_features"] == 4 and row["images_per_s"] > 0
    assert -1 < row["fit_overhead"] < 10
    gemms = benchmarking.step_gemms("train", 4, 2, 8, 1, 2, 4)
    assert np.isclose(row["gemm_gflop"], _gflop(gemms))
    assert 0 < row["gemm_floor_ms"] and 0 < row["gemm_floor_bf16_ms"]
    # Only the models whose products step_gemms lists get a floor.
    clipped = benchmarking.time_config(
        "ClippedRelativePerformer", "infer", 4, 2, False, repeats=5, window_steps=1, **hparams
    )
    assert "gemm_floor_ms" not in clipped and clipped["images_per_s"] > 0


@pytest.mark.parametrize("jit_compile", [False, True], ids=["graph", "xla"])
def test_serving_rows_time_the_exported_signature_and_render(tmp_path, jit_compile):
    row = benchmarking.time_config(
        "Performer",
        "serve",
        32,
        3,
        jit_compile,
        repeats=5,
        window_steps=1,
        dim=8,
        depth=1,
        heads=2,
        nb_features=4,
    )
    assert (
        row["mode"] == "serve"
        and row["batch_size"] == 3
        and row["images_per_s"] > 0
        and row["jit_compile"] is jit_compile
    )
    assert 0 < row["latency_p50_ms"] <= row["latency_p99_ms"] and row["latency_calls"] == 200
    assert row["first_call_ms"] > 0
    assert "gemm_floor_ms" not in row
    path = tmp_path / "bench.md"
    render(dict(throughput=[row]), str(path))
    assert (
        f"| Performer | 4 | {'XLA' if jit_compile else 'plain'} | {row['latency_p50_ms']:.1f} | "
        f"{row['latency_p99_ms']:.1f} | {row['first_call_ms']:.0f} | 3 | "
        f"{row['images_per_s']:.1f} |" in path.read_text()
    )


def test_serving_rows_need_the_serving_datasets_size():
    with pytest.raises(ValueError, match="image_size=32"):
        benchmarking.time_config(
            "Performer", "serve", 16, 3, False, dim=8, depth=1, heads=2, nb_features=4
        )


def test_targets_compare_rows_of_the_newest_rows_cpu_only(tmp_path):
    old = [
        dict(row("Performer", "train", 1025, 40.0), cpu="Fast CPU"),
        dict(row("ClippedRelativePerformer", "train", 1025, 30.0), cpu="Fast CPU"),
    ]
    new = [
        dict(row("Performer", "train", 1025, 20.0), cpu="Slow CPU"),
        dict(row("ClippedRelativePerformer", "train", 1025, 12.0), cpu="Slow CPU"),
    ]
    path = tmp_path / "bench.md"
    render(dict(throughput=old + new), str(path))
    text = path.read_text()
    assert text.startswith("# Benchmarks\n\nCPU of these rows: Slow CPU (")
    assert "| Performer training ≥ 27 img/s (stretch ≥ 38) | 20.0 img/s (XLA) | no |" in text
    assert (
        "| ClippedRelativePerformer training ≥ 0.5× Performer | 0.60× (XLA, m = 110 vs 110) | yes |"
        in text
    )
    earlier = text[text.index("## Earlier sittings on other CPUs") :]
    assert (
        "CPU: Fast CPU" in earlier
        and "| Performer | train | 32² | 1025 | 16 | XLA | 110 | 400 | 40.0 |" in earlier
    )
    assert "| 400 | 40.0 |" not in text[: text.index("## Earlier sittings")]
    assert (
        benchmarking.cpu_label(
            dict(model_name="X", family="6", model="143", flags=["avx2", "amx_bf16"])
        )
        == "X (family 6 model 143; avx2, amx_bf16)"
    )


def test_profile_summary_counts_each_kernels_own_time():
    import types

    from benchmarks import trace_summary as profile_step

    def event(name, start, length):
        return types.SimpleNamespace(name=name, offset_ps=start * 10**9, duration_ps=length * 10**9)

    # A thunk executor (runtime) holding a matmul whose ParallelFor counts for it, then a fusion.
    events = [
        event("ThunkExecutor::Execute", 0, 10),
        event("MatMul.12", 1, 5),
        event("ParallelFor", 2, 3),
        event("wrapped_reduce-window.87", 7, 2),
    ]
    own = profile_step._self_times(events, lambda e: profile_step.kernel_name(e.name))
    assert own == {"runtime": 3.0, "MatMul": 5.0, "wrapped_reduce-window": 2.0}
    assert profile_step.category("MatMul_1") == "GEMM"
    assert profile_step.category("wrapped_reduce-window") == "reduction"
    assert profile_step.category("block_0/ff/Gelu/mul:Mul".rsplit(":")[-1]) == "element-wise"
    assert profile_step.kernel_name("gradient_tape/block_0/MatMul_1:BatchMatMulV2") == (
        "BatchMatMulV2"
    )


def test_fashion_mnist_activations_feed_the_approximation_table(fashion_mnist_dir):
    # The benchmark's default --approximation reads the reference Performer's first block.
    query, key, value = benchmarking.fashion_mnist_activations(fashion_mnist_dir, images=2)
    assert query.shape == key.shape == value.shape
    assert query.shape[0] == 2 and query.shape[2] == 32 * 32 + 1  # pixels + class token
    assert all(np.isfinite(x).all() for x in (query, key, value))
    rows = benchmarking.approximation_errors(query, key, value, features=(8, 512), draws=2)
    assert [row["nb_features"] for row in rows] == [8, 512]
    assert 0 < rows[1]["relative_error"] < rows[0]["relative_error"]
