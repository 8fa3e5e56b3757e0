"""--precision: the policy each name resolves to (auto from the hardware), models under it,
exports at another precision than the run, FAVOR+ error with bf16 inputs."""

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import run_script

from relperf_tf.app import machine, precision, runs, settings, training
from relperf_tf.models import build_model

TINY = dict(dim=16, depth=1, heads=2, nb_features=8, seed=0)


def _cpuinfo(tmp_path, flags):
    path = tmp_path / "cpuinfo"
    path.write_text(f"model name\t: Test CPU\nflags\t\t: fpu {flags}\n")
    return str(path)


def test_cpu_flags_decide_native_bf16(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(
        "vendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 17\nmodel name\t: AMD EPYC "
        "9R14\nflags\t\t: fpu avx2 avx512f avx512_bf16\n\n"
        "vendor_id\t: AuthenticAMD\nflags\t\t: fpu avx2 avx512f avx512_bf16\n"
    )
    info = machine.cpu_info(str(cpuinfo))
    assert (
        info["model_name"] == "AMD EPYC 9R14" and info["family"] == "25" and info["model"] == "17"
    )
    assert info["flags"] == ["avx2", "avx512f", "avx512_bf16"] and info["native_bf16"]
    cpuinfo.write_text("model name\t: Intel Xeon\nflags\t\t: avx2 avx512f amx_tile amx_bf16\n")
    assert machine.cpu_info(str(cpuinfo))["native_bf16"]
    cpuinfo.write_text("model name\t: AMD EPYC\nflags\t\t: avx2 fma\n")
    info = machine.cpu_info(str(cpuinfo))
    assert info["flags"] == ["avx2"] and not info["native_bf16"]
    assert machine.cpu_info(str(tmp_path / "absent"))["model_name"] == "unknown"


@pytest.mark.parametrize(
    "flags,expected",
    [
        ("avx2 avx512f avx512_bf16", "mixed_bfloat16"),
        ("avx2 amx_tile amx_bf16", "mixed_bfloat16"),
        ("avx2 fma avx512f", "float32"),
    ],
    ids=["avx512_bf16", "amx", "no-bf16"],
)
def test_auto_is_bf16_only_on_cpus_with_native_bf16(tmp_path, monkeypatch, flags, expected):
    monkeypatch.setattr(tf.config, "list_physical_devices", lambda kind=None: [])
    assert precision.dtype_policy("auto", _cpuinfo(tmp_path, flags)) == expected
    # Explicit names are taken as they are, whatever the CPU.
    for name in ("float32", "mixed_bfloat16"):
        assert precision.dtype_policy(name, _cpuinfo(tmp_path, flags)) == name


@pytest.mark.parametrize(
    "capabilities,expected",
    [([(8, 0)], "mixed_bfloat16"), ([(9, 0), (8, 6)], "mixed_bfloat16"), ([(7, 5)], "float32")],
    ids=["A100", "H100+A6000", "T4"],
)
def test_auto_on_gpus_reads_their_compute_capability(tmp_path, monkeypatch, capabilities, expected):
    gpus = [f"GPU:{i}" for i in range(len(capabilities))]
    monkeypatch.setattr(
        tf.config, "list_physical_devices", lambda kind=None: gpus if kind == "GPU" else []
    )
    monkeypatch.setattr(
        tf.config.experimental,
        "get_device_details",
        lambda gpu: {"compute_capability": capabilities[gpus.index(gpu)]},
    )
    # The GPU decides even on a CPU with native bf16.
    assert precision.dtype_policy("auto", _cpuinfo(tmp_path, "amx_bf16")) == expected


def test_an_unknown_precision_names_the_flag_and_the_choices():
    with pytest.raises(settings.InvalidSetting) as error:
        precision.dtype_policy("float16")
    assert settings.flag_message(error.value) == (
        "flag --precision='float16' is not allowed; use one of "
        "('float32', 'mixed_bfloat16', 'auto')."
    )


def test_a_run_config_builds_its_model_under_the_chosen_policy():
    config = training.resolve_config(
        "Performer", "fashion_mnist", precision="mixed_bfloat16", jit_compile=False, **TINY
    )
    assert config.model_hparams()["dtype"] == "mixed_bfloat16"
    model = training.build_compiled_model(config, tf.distribute.get_strategy())
    assert model.dtype_policy.name == "mixed_bfloat16"
    assert model.blocks[0].attention._query_dense.compute_dtype == "bfloat16"
    assert {v.dtype for v in model.trainable_variables} == {"float32"}
    images = np.random.default_rng(0).random((4, 32, 32, 1)).astype("float32")
    history = model.fit(images, np.arange(4), epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert model(images).dtype == "float32"
    assert training.resolve_config("Performer", "fashion_mnist").precision == "float32"


def test_with_policy_keeps_the_weights_and_changes_only_the_arithmetic():
    model = build_model("RelativePerformer", image_shape=(8, 8, 1), num_classes=3, **TINY)
    assert precision.with_policy(model, "float32") is model
    bf16 = precision.with_policy(model, "mixed_bfloat16")
    assert bf16.dtype_policy.name == "mixed_bfloat16" and model.dtype_policy.name == "float32"
    for a, b in zip(model.weights, bf16.weights):
        assert a.path == b.path and a.dtype == b.dtype and a.dtype in ("float32", "int64")
        np.testing.assert_array_equal(np.array(a.numpy()), np.array(b.numpy()))
    images = np.random.default_rng(1).random((2, 8, 8, 1)).astype("float32")
    fp32_logits, bf16_logits = np.array(model(images)), np.array(bf16(images))
    assert bf16_logits.dtype == np.float32
    # bf16 keeps 8 significant bits: logits agree to a few parts in a hundred, not exactly.
    assert 0 < np.abs(fp32_logits - bf16_logits).max() <= 0.05 * np.abs(fp32_logits).max() + 0.02


def test_the_tuner_builds_trials_at_the_runs_precision():
    import keras_tuner

    from relperf_tf.app import tuning

    base = training.resolve_config(
        "NoposPerformer", "fashion_mnist", precision="mixed_bfloat16", **TINY
    )
    hypermodel = tuning.PerformerHyperModel(base, load_splits=None, dims=(16,), heads=(2,))
    model = hypermodel.build(keras_tuner.HyperParameters())
    assert model.dtype_policy.name == "mixed_bfloat16"


def test_export_at_another_precision_takes_uint8_and_returns_float32(tmp_path, tiny_run):
    run_dir, _ = tiny_run
    export_dir = tmp_path / "bf16"
    result = run_script(
        "export.py", [run_dir, f"--export_dir={export_dir}", "--precision=mixed_bfloat16"]
    )
    assert result.returncode == 0, result.stderr[-2000:]
    version = os.path.join(export_dir, "1")
    assert json.load(open(os.path.join(version, "assets.extra", "relperf.json")))[
        "dtype_policy"
    ] == ("mixed_bfloat16")
    serve = tf.saved_model.load(version).signatures["serving_default"]
    assert serve.structured_input_signature[1]["images"].dtype == tf.uint8
    images = np.random.default_rng(0).integers(0, 256, (8, 28, 28, 1), dtype=np.uint8)
    probabilities = serve(images=tf.constant(images))["probabilities"]
    assert probabilities.dtype == tf.float32
    from relperf_tf.app import data

    model = runs.load_best_model(run_dir)
    expected = keras.ops.softmax(model(data.preprocess(images, "fashion_mnist", "linear")))
    assert np.abs(np.array(probabilities) - np.array(expected)).max() <= 0.02


def test_a_bad_export_precision_writes_nothing(tmp_path, tiny_run):
    run_dir, _ = tiny_run
    result = run_script("export.py", [run_dir, f"--export_dir={tmp_path / 'x'}", "--precision=16"])
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "error: flag --precision='16' is not allowed; use one of "
        "('float32', 'mixed_bfloat16', 'auto')."
    )
    assert not (tmp_path / "x").exists()


def test_bf16_inputs_leave_the_favor_error_within_five_percent():
    from benchmarks import benchmarking

    rng = np.random.default_rng(0)
    q, k, v = (0.5 * rng.normal(size=(1, 2, 64, 16)).astype("float32") for _ in range(3))
    fp32, bf16 = (
        benchmarking.approximation_errors(q, k, v, features=(16, 64), draws=2, precision=p)
        for p in ("float32", "mixed_bfloat16")
    )
    for a, b in zip(fp32, bf16):
        assert a["relative_error"] != b["relative_error"]  # the rounding is applied
        assert abs(b["relative_error"] / a["relative_error"] - 1) <= 0.05
