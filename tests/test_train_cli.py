"""scripts/train.py end to end: files written, bad flags, resume after SIGKILL, mirrored."""

import csv
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import REPO

SCRIPT = os.path.join(REPO, "scripts", "train.py")
QUICK = [
    "--dim=8",
    "--depth=1",
    "--heads=2",
    "--nb_features=4",
    "--batch_size=16",
    "--noprogress_bar",
    "--seed=0",
]


def train_cli(args, **kwargs):
    return subprocess.run([sys.executable, SCRIPT] + args, capture_output=True, text=True, **kwargs)


def read_rows(run_dir):
    with open(os.path.join(run_dir, "metrics.csv")) as f:
        return list(csv.DictReader(f))


def test_end_to_end_on_real_fashion_mnist(tmp_path, fashion_mnist_dir):
    log_dir = str(tmp_path / "logs")
    result = train_cli(
        [
            "--model=RelativePerformer",
            "--dataset=fashion_mnist",
            f"--log_dir={log_dir}",
            f"--data_dir={fashion_mnist_dir}",
            "--epochs=2",
            "--steps_per_epoch=5",
        ]
        + QUICK
    )
    assert result.returncode == 0, result.stderr[-2000:]
    run_dir = os.path.join(log_dir, "default", "version_0")
    hparams = json.load(open(os.path.join(run_dir, "hparams.json")))
    assert hparams["model"] == "RelativePerformer" and hparams["seed"] == 0 and hparams["dim"] == 8
    assert {"tensorflow", "keras"} <= set(hparams["versions"])
    assert [row["epoch"] for row in read_rows(run_dir)] == ["0", "1"]
    assert float(read_rows(run_dir)[0]["learning_rate"]) == pytest.approx(1e-3)
    assert os.path.exists(os.path.join(run_dir, "checkpoints", "best.keras"))
    events = [
        name for _, _, files in os.walk(os.path.join(run_dir, "tensorboard")) for name in files
    ]
    assert any(name.startswith("events.out.tfevents") for name in events)
    metrics = json.load(open(os.path.join(run_dir, "test_metrics.json")))
    assert 0.0 <= metrics["test_accuracy"] <= 1.0 and metrics["test_loss"] > 0
    # The next run gets the next version; an existing one needs --resume.
    again = train_cli(
        [
            "--model=RelativePerformer",
            "--dataset=fashion_mnist",
            f"--log_dir={log_dir}",
            "--version=version_0",
        ]
        + QUICK
    )
    assert (
        again.returncode != 0
        and "--version='version_0'" in again.stderr
        and "--resume" in again.stderr
    )


@pytest.mark.parametrize(
    "args,flag",
    [
        (["--model=Transformer", "--dataset=mnist"], "--model"),
        (["--model=Performer", "--dataset=svhn"], "--dataset"),
        (["--model=Performer", "--dataset=mnist", "--batch_size=0"], "--batch_size"),
        (["--model=Performer", "--dataset=mnist", "--attn_dropout=-0.5"], "--attn_dropout"),
        (["--model=Performer", "--dataset=mnist", "--learning_rate=-1"], "--learning_rate"),
        (["--model=Performer", "--dataset=mnist", "--dim=10", "--heads=4"], "--dim"),
        (["--model=Performer", "--dataset=mnist", "--schedule=cosine"], "--schedule"),
        (["--model=Performer", "--dataset=mnist", "--embedding_type=conv"], "--embedding_type"),
        (["--model=Performer", "--dataset=mnist", "--strategy=tpu"], "--strategy"),
        (["--model=Performer", "--dataset=mnist", "--preset=huge"], "--preset"),
        (["--model=Performer", "--dataset=mnist", "--precision=fp16"], "--precision='fp16'"),
        (["--model=Performer", "--dataset=mnist", "--batch_size=abc"], "--batch_size"),
        (["--dataset=mnist"], "--model"),
        (["--model=Performer", "--dataset=mnist", "--layout=grid"], "--layout='grid'"),
        (["--model=Performer", "--dataset=mnist", "--causal"], "--causal=True"),
        (
            [
                "--model=ClippedRelativePerformer",
                "--dataset=mnist",
                "--layout=sequence",
                "--causal",
            ],
            "--causal=True",
        ),
        (["--model=Performer", "--dataset=mnist", "--layout=sequence", "--margin=2"], "--margin"),
        (["--model=Performer", "--dataset=mnist", "--init_from=none.keras"], "--init_from"),
    ],
)
def test_bad_flags_fail_in_one_line_and_write_nothing(tmp_path, args, flag):
    log_dir = tmp_path / "logs"
    result = train_cli(args + [f"--log_dir={log_dir}"], cwd=tmp_path)
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and flag in errors[0], result.stderr[-1500:]
    assert not log_dir.exists()
    assert (
        sorted(os.listdir(tmp_path)) == ["logs"]
        or not os.listdir(tmp_path)
        or sorted(os.listdir(tmp_path)) == []
    )


@pytest.mark.parametrize(
    "command",
    ["relperf-train", "python -m relperf_cli train"],
    ids=["console", "module"],
)
def test_installed_command_is_the_script(tmp_path, command):
    """The console entry point (setup.py) and `python -m` run train.py's code."""
    program = command.split()
    if program[0] == "python":
        program[0] = sys.executable
    else:
        program[0] = os.path.join(os.path.dirname(sys.executable), program[0])
    result = subprocess.run(
        program + ["--model=Performer", "--dataset=mnist", "--feature_map=cosine"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert result.returncode == 2, result.stderr[-1500:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        "error: flag --feature_map='cosine' is not allowed; "
        "use one of ('softmax', 'relu', 'efficient', 'exact')."
    ]
    # TensorFlow's start-up lines (CUDA probe, CPU instructions) stay off a CPU user's terminal.
    assert "cuda" not in result.stderr.lower() and "InitializeLog" not in result.stderr


COMMANDS = (
    "train",
    "evaluate",
    "shift",
    "export",
    "predict",
    "tune",
    "sequence-shift",
    "inspect",
    "prepare",
)


@pytest.mark.parametrize("command", COMMANDS)
def test_help_lists_the_commands_own_flags_grouped(command):
    program = os.path.join(os.path.dirname(sys.executable), f"relperf-{command}")
    result = subprocess.run([program, "--help"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-1500:]
    assert result.stdout.startswith(f"USAGE: relperf-{command}")
    # absl's and TensorFlow's own flags are left to --helpfull.
    listed = [line.split(":")[0].strip() for line in result.stdout.splitlines()]
    for foreign in ("--[no]alsologtostderr", "--[no]pdb", "--[no]logtostderr", "--verbosity"):
        assert foreign not in listed
    assert "cuda" not in result.stderr.lower()
    if command == "train":
        for group in ("run", "data", "model", "FAVOR+", "position"):
            assert f"\n{group} flags:\n" in result.stdout
        for flag in ("--model", "--dataset", "--position_kernel", "--[no]causal", "--log_dir"):
            assert flag in listed
        assert "--batch_size: Global batch size. (default: 16)" in result.stdout
        assert "One of {favor,exact,circular}" in result.stdout or "`circular`" in result.stdout


def test_deprecated_kernel_flags_map_to_feature_map(tmp_path):
    from relperf_tf.layers.favor_kernel import upgrade_legacy_options

    assert upgrade_legacy_options({"kernel": "relu"}) == {"feature_map": "relu"}
    assert upgrade_legacy_options({"no_projection": True}) == {"feature_map": "efficient"}
    assert upgrade_legacy_options({"kernel": "exact", "no_projection": True}) == {
        "feature_map": "exact"
    }
    both = train_cli(
        ["--model=Performer", "--dataset=mnist", "--kernel=relu", "--feature_map=relu"]
    )
    assert both.returncode == 2
    assert "--feature_map cannot be combined with the deprecated ['--kernel']" in both.stderr


def test_unwritable_log_dir(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):
            pytest.skip("running as a user who can write anywhere (root)")
        result = train_cli(["--model=Performer", "--dataset=mnist", f"--log_dir={locked / 'logs'}"])
        assert result.returncode != 0 and "--log_dir" in result.stderr
        assert not (locked / "logs").exists()
    finally:
        locked.chmod(0o700)


def test_log_dir_that_is_a_file(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    result = train_cli(["--model=Performer", "--dataset=mnist", f"--log_dir={blocker / 'logs'}"])
    assert result.returncode != 0 and "--log_dir" in result.stderr.splitlines()[-1]


def test_missing_dataset_is_one_clear_error(tmp_path):
    result = train_cli(
        [
            "--model=Performer",
            "--dataset=cifar10",
            f"--data_dir={tmp_path / 'none'}",
            f"--log_dir={tmp_path / 'logs'}",
        ]
        + QUICK
    )
    assert result.returncode == 3
    assert "--data_dir" in result.stderr.splitlines()[-1]
    assert not (tmp_path / "logs").exists()


@pytest.mark.slow
@pytest.mark.parametrize("extra", [[], ["--ema_momentum=0.9"]], ids=["plain", "ema"])
def test_resume_after_sigkill(tmp_path, fashion_mnist_dir, extra):
    """Also with weight averaging, whose epoch-end swap sits beside the backup in `fit`."""
    log_dir = str(tmp_path / "logs")
    args = (
        [
            "--model=NoposPerformer",
            "--dataset=fashion_mnist",
            f"--log_dir={log_dir}",
            f"--data_dir={fashion_mnist_dir}",
            "--epochs=4",
            "--steps_per_epoch=40",
            "--version=run",
        ]
        + QUICK
        + extra
    )
    process = subprocess.Popen(
        [sys.executable, SCRIPT] + args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    run_dir = os.path.join(log_dir, "default", "run")
    deadline = time.time() + 300
    while time.time() < deadline and process.poll() is None:
        if os.path.exists(os.path.join(run_dir, "metrics.csv")) and len(read_rows(run_dir)) >= 1:
            break
        time.sleep(0.2)
    time.sleep(0.5)  # into epoch 1
    process.send_signal(signal.SIGKILL)
    process.wait()
    before = read_rows(run_dir)
    assert 1 <= len(before) < 4, "the run should be killed mid-training"
    assert os.path.exists(os.path.join(run_dir, "checkpoints", "best.keras"))

    result = train_cli(args + ["--resume"])
    assert result.returncode == 0, result.stderr[-2000:]
    after = read_rows(run_dir)
    assert [row["epoch"] for row in after] == ["0", "1", "2", "3"]
    assert after[: len(before)] == before  # finished epochs were not redone
    assert os.path.exists(os.path.join(run_dir, "test_metrics.json"))
    hparams = json.load(open(os.path.join(run_dir, "hparams.json")))
    assert hparams["ema_momentum"] == (0.9 if extra else 0.0)


@pytest.mark.slow
@pytest.mark.parametrize("preset", [[], ["--preset=tiny"]], ids=["graph", "tiny_preset_xla"])
def test_mirrored_cli_on_two_cpu_replicas(tmp_path, fashion_mnist_dir, preset):
    """Also with a preset, whose XLA is on (Keras' own mirrored fit failed there: a variable of
    replica 1 read from CPU:0)."""
    log_dir = str(tmp_path / "logs")
    result = train_cli(
        preset
        + [
            "--model=ClippedRelativePerformer",
            "--dataset=fashion_mnist",
            "--clipping_dist=2",
            f"--log_dir={log_dir}",
            f"--data_dir={fashion_mnist_dir}",
            "--epochs=1",
            "--steps_per_epoch=3",
            "--strategy=mirrored",
            "--cpu_replicas=2",
        ]
        + QUICK
    )
    assert result.returncode == 0, result.stderr[-2000:]
    hparams = json.load(open(os.path.join(log_dir, "default", "version_0", "hparams.json")))
    assert hparams["replicas"] == 2


def _saved_arrays(path):
    """Every array in a `.keras` file's weights (the model's and the optimizer's), by path."""
    import io
    import zipfile

    import h5py

    arrays = {}
    with zipfile.ZipFile(path) as archive:
        with h5py.File(io.BytesIO(archive.read("model.weights.h5")), "r") as f:
            f.visititems(
                lambda name, item: (
                    arrays.__setitem__(name, item[()]) if isinstance(item, h5py.Dataset) else None
                )
            )
    return arrays


def test_mirrored_cli_trains_on_the_batches_one_device_sees(tmp_path, fashion_mnist_dir):
    """Two replicas through train.py (its reshuffling pipeline, XLA steps): the same logged
    metrics and, after three steps, the same weights as one device with the same seed."""
    import numpy as np

    runs = {}
    for name, flags in [
        ("one_device", ["--strategy=default"]),
        ("mirrored", ["--strategy=mirrored", "--cpu_replicas=2"]),
    ]:
        log_dir = str(tmp_path / name)
        result = train_cli(
            flags
            + [
                "--model=NoposPerformer",
                "--dataset=fashion_mnist",
                f"--log_dir={log_dir}",
                f"--data_dir={fashion_mnist_dir}",
                "--epochs=1",
                "--steps_per_epoch=3",
                "--attn_dropout=0",
                "--ff_dropout=0",
            ]
            + QUICK
        )
        assert result.returncode == 0, result.stderr[-2000:]
        run_dir = os.path.join(log_dir, "default", "version_0")
        runs[name] = (
            read_rows(run_dir)[0],
            _saved_arrays(os.path.join(run_dir, "checkpoints", "best.keras")),
        )
    (one_row, one_arrays), (two_row, two_arrays) = runs["one_device"], runs["mirrored"]
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        assert float(two_row[key]) == pytest.approx(float(one_row[key]), rel=1e-4), key
    assert sorted(two_arrays) == sorted(one_arrays)
    # Adam moves a weight by about the learning rate (1e-3) a step whatever the batch: other
    # batches leave many weights lr/2 apart; the same ones agree to rounding.
    for name, one in one_arrays.items():
        np.testing.assert_allclose(two_arrays[name], one, atol=1e-4, rtol=0, err_msg=name)


def test_inspect_writes_the_pictures_and_rejects_a_pixel_off_the_grid(tmp_path, fashion_mnist_dir):
    """relperf-inspect on a shipped preset's folder (which holds an hparams.json but is not a
    run directory): three PNGs; by name with a bad --pixel: exits 2 and writes none."""
    program = os.path.join(os.path.dirname(sys.executable), "relperf-inspect")
    common = [f"--data_dir={fashion_mnist_dir}", "--image_index=3"]
    out = tmp_path / "pictures"
    result = subprocess.run(
        [program, os.path.join(REPO, "saved_models", "relative_performer_circular_fashion_mnist")]
        + [f"--output_dir={out}"]
        + common,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-1500:]
    names = sorted(os.listdir(out))
    assert names == [
        "attention_class_token.png",
        "attention_pixel_16_16.png",
        "positional_kernels.png",
    ]
    assert all((out / n).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for n in names)
    bad = tmp_path / "bad"
    result = subprocess.run(
        [
            program,
            "relative_performer_circular_fashion_mnist",
            f"--output_dir={bad}",
            "--pixel=40,1",
        ]
        + common,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: flag --pixel=40,1")
    assert not bad.exists()
