"""Faults beyond flags, provoked for real: concurrent runs, broken files, signals."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import REPO, train_tiny

SCRIPTS = os.path.join(REPO, "scripts")
QUICK = [
    "--model=Performer",
    "--dataset=fashion_mnist",
    "--dim=8",
    "--depth=1",
    "--heads=2",
    "--nb_features=4",
    "--batch_size=16",
    "--epochs=1",
    "--steps_per_epoch=2",
    "--noprogress_bar",
]


def start(name, args):
    return subprocess.Popen(
        [sys.executable, os.path.join(SCRIPTS, name)] + args,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(processes):
    results = [(p.wait(timeout=600), p.stderr.read()) for p in processes]
    for p in processes:
        p.stdout.close()
        p.stderr.close()
    return results


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, fashion_mnist_dir):
    """A finished Performer run of its own (these tests copy and break it)."""
    return train_tiny("Performer", tmp_path_factory.mktemp("logs"), fashion_mnist_dir, steps=2)


def test_two_runs_started_together_get_their_own_versions(tmp_path, fashion_mnist_dir):
    """Both plan version_0 at start; the directory is claimed atomically later, so one moves on."""
    log_dir = str(tmp_path / "logs")
    runs = [
        start(
            "train.py",
            QUICK + [f"--log_dir={log_dir}", f"--data_dir={fashion_mnist_dir}", f"--seed={seed}"],
        )
        for seed in (1, 2)
    ]
    for code, stderr in finish(runs):
        assert code == 0, stderr[-2000:]
    exp_dir = os.path.join(log_dir, "default")
    assert sorted(os.listdir(exp_dir)) == ["version_0", "version_1"]
    seeds = set()
    for version in ("version_0", "version_1"):
        run_dir = os.path.join(exp_dir, version)
        hparams = json.load(open(os.path.join(run_dir, "hparams.json")))
        assert hparams["run_dir"] == run_dir
        seeds.add(hparams["seed"])
        for name in ("metrics.csv", "test_metrics.json", os.path.join("checkpoints", "best.keras")):
            assert os.path.exists(os.path.join(run_dir, name)), (version, name)
    assert seeds == {1, 2}  # neither run overwrote the other's files


def test_two_exports_started_together_get_distinct_complete_versions(tmp_path, tiny_run):
    export_dir = str(tmp_path / "exported")
    for code, stderr in finish(
        [start("export.py", [tiny_run, f"--export_dir={export_dir}"]) for _ in range(2)]
    ):
        assert code == 0, stderr[-2000:]
    assert sorted(os.listdir(export_dir)) == ["1", "2"]  # no staging directory left
    for version in ("1", "2"):
        assert os.path.exists(os.path.join(export_dir, version, "saved_model.pb"))
        assert os.path.exists(os.path.join(export_dir, version, "assets.extra", "relperf.json"))


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tiny_run):
    export_dir = str(tmp_path_factory.mktemp("exported"))
    code, stderr = finish([start("export.py", [tiny_run, f"--export_dir={export_dir}"])])[0]
    assert code == 0, stderr[-2000:]
    return export_dir


def test_predict_reports_each_broken_image_and_classifies_the_rest(
    tmp_path, exported, fashion_mnist_dir
):
    import numpy as np
    import tensorflow as tf
    from PIL import Image

    from relperf_tf.app import data

    images, _ = data.raw_test_images("fashion_mnist", fashion_mnist_dir)
    image = images[0]
    png = tf.io.encode_png(image).numpy()
    files = {
        "good.png": png,
        "truncated.png": png[: len(png) // 2],
        "text.png": b"not an image at all",
        "empty.png": b"",
        "deep.png": tf.io.encode_png(tf.constant(image.astype("uint16") * 257)).numpy(),  # 16 bit
    }
    for name, content in files.items():
        (tmp_path / name).write_bytes(content)
    Image.fromarray(np.repeat(image, 3, axis=2)).convert("CMYK").save(tmp_path / "cmyk.jpg")
    (tmp_path / "folder.png").mkdir()
    order = [
        "good.png",
        "truncated.png",
        "text.png",
        "deep.png",
        "empty.png",
        "cmyk.jpg",
        "folder.png",
    ]
    result = subprocess.run(
        [sys.executable, os.path.join(SCRIPTS, "predict.py"), exported]
        + [str(tmp_path / n) for n in order]
        + ["--json"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    expected = {
        "truncated.png": "truncated or corrupt",
        "text.png": "not a PNG, JPEG",
        "empty.png": "empty file",
        "folder.png": "a directory",
    }
    assert len(errors) == len(expected)
    for (name, problem), line in zip(expected.items(), errors):
        assert name in line and problem in line, line
    predictions = {os.path.basename(p["file"]): p for p in json.loads(result.stdout)}
    assert sorted(predictions) == ["cmyk.jpg", "deep.png", "good.png"]
    # A 16-bit PNG of the same picture is scaled to 8 bits, not misread.
    assert predictions["deep.png"]["class_index"] == predictions["good.png"]["class_index"]
    assert predictions["deep.png"]["probability"] == pytest.approx(
        predictions["good.png"]["probability"], abs=1e-6
    )


def damage_checkpoint(run_dir, damage):
    """Breaks a copied run: no best.keras, another model's file, or a truncated one; the expected
    error."""
    best = os.path.join(run_dir, "checkpoints", "best.keras")
    if damage == "missing":
        os.remove(best)
        return "no finished runs"  # find_runs skips the unfinished run, then there is none
    if (
        damage == "other_model"
    ):  # a Performer's file in a run whose hparams.json says RelativePerformer
        hparams = json.load(open(os.path.join(run_dir, "hparams.json")))
        json.dump(
            dict(hparams, model="RelativePerformer", dim=16),
            open(os.path.join(run_dir, "hparams.json"), "w"),
        )
        return (
            "holds another model than its run's hparams.json describes: model='Performer' "
            "(hparams.json: 'RelativePerformer'), dim=8 (hparams.json: 16)"
        )
    content = open(best, "rb").read()
    open(best, "wb").write(content[: len(content) // 3])
    return "best.keras cannot be loaded"


@pytest.mark.parametrize("damage", ["missing", "other_model", "truncated"])
def test_bad_checkpoint_is_one_error_before_any_csv_is_touched(tmp_path, tiny_run, damage):
    import shutil

    from relperf_tf.app import evaluation, shift

    run_dir = str(tmp_path / "run")
    shutil.copytree(tiny_run, run_dir)
    expected = damage_checkpoint(run_dir, damage)
    output = tmp_path / "results.csv"
    before = (
        ",".join(evaluation.COLUMNS) + "\n" + "x," * (len(evaluation.COLUMNS) - 1) + "x\n"
    )  # an earlier row
    output.write_text(before)
    for compute in (
        lambda: evaluation.evaluate_into_csv([run_dir], str(output)),
        lambda: shift.run_shift_experiment([run_dir], [1], 2),
    ):
        with pytest.raises(ValueError) as error:
            compute()
        assert expected in str(error.value) and "\n" not in str(error.value)
    assert output.read_text() == before
    assert sorted(os.listdir(tmp_path)) == ["results.csv", "run"]


@pytest.mark.parametrize("script", ["evaluate.py", "shift_robustness.py"])
def test_scripts_print_the_checkpoint_error_in_one_line(tmp_path, tiny_run, script):
    import shutil

    run_dir = str(tmp_path / "run")
    shutil.copytree(tiny_run, run_dir)
    expected = damage_checkpoint(run_dir, "other_model")
    output = tmp_path / "out.csv"
    result = subprocess.run(
        [sys.executable, os.path.join(SCRIPTS, script), run_dir, f"--output={output}"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and expected in errors[0] and "Traceback" not in result.stderr
    assert not output.exists()


def wait_for(condition, process, timeout=300):
    deadline = time.time() + timeout
    while time.time() < deadline and process.poll() is None and not condition():
        time.sleep(0.1)
    assert process.poll() is None, "the process ended before the signal"


def metrics_rows(run_dir):
    import csv

    path = os.path.join(run_dir, "metrics.csv")
    return list(csv.DictReader(open(path))) if os.path.exists(path) else []


def test_sigterm_stops_training_resumably(tmp_path, fashion_mnist_dir):
    """SIGTERM: exit 143 within seconds, whole files, the backup kept for --resume (SIGINT takes the
    same path)."""
    log_dir = str(tmp_path / "logs")
    run_dir = os.path.join(log_dir, "default", "run")
    args = QUICK[:-2] + [
        "--epochs=4",
        "--steps_per_epoch=60",
        "--noprogress_bar",
        f"--log_dir={log_dir}",
        f"--data_dir={fashion_mnist_dir}",
        "--version=run",
        "--seed=3",
    ]
    seen = []
    for signum, resume in ((signal.SIGTERM, []),):
        process = start("train.py", args + resume)
        wait_for(lambda: len(metrics_rows(run_dir)) > len(seen), process)  # one more epoch done
        time.sleep(0.5)  # into the next one
        sent = time.time()
        process.send_signal(signum)
        code, stderr = finish([process])[0]
        assert code == 128 + signum, stderr[-2000:]
        assert time.time() - sent < 30
        errors = [line for line in stderr.splitlines() if line.startswith("error:")]
        assert (
            len(errors) == 1
            and signal.Signals(signum).name in errors[0]
            and "--resume --version=run" in errors[0]
        )
        rows = metrics_rows(run_dir)
        assert rows[: len(seen)] == seen and 1 <= len(rows) < 4
        seen = rows
        assert os.path.exists(os.path.join(run_dir, "backup", "training_metadata.json"))
        assert not any(
            name.startswith(".tmp-") for _, _, files in os.walk(run_dir) for name in files
        )
    # (that --resume then finishes the run is test_train_cli.test_resume_after_sigkill's part)


def test_sigint_is_recorded_and_raised_between_batches_and_twice_stops_at_once():
    from relperf_tf.app.callbacks import Interrupted, StopOnSignal

    with StopOnSignal() as stop:
        stop.on_epoch_begin(2)
        stop.on_train_batch_end(0)  # nothing received: goes on
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.received == signal.SIGINT  # recorded, not raised inside the step
        with pytest.raises(Interrupted, match="SIGINT during epoch 3"):
            stop.on_train_batch_end(1)
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is not stop._handle  # the previous handler is back


def test_sigterm_during_export_leaves_nothing(tmp_path, tiny_run):
    export_dir = tmp_path / "exported"
    process = start("export.py", [tiny_run, f"--export_dir={export_dir}"])
    wait_for(
        lambda: (
            export_dir.exists() and any(n.startswith(".export-") for n in os.listdir(export_dir))
        ),
        process,
    )
    process.send_signal(signal.SIGTERM)
    code, stderr = finish([process])[0]
    assert code == 128 + signal.SIGTERM, stderr[-2000:]
    assert "interrupted by SIGTERM" in stderr
    assert os.listdir(export_dir) == []  # no staging directory, no version


@pytest.mark.parametrize("damage", ["truncated", "bit_flipped"])
def test_corrupt_prepared_data_is_one_error_and_no_run_directory(
    tmp_path, fashion_mnist_dir, damage
):
    import glob
    import shutil

    data_dir = tmp_path / "tfds"
    shutil.copytree(fashion_mnist_dir, data_dir)
    record = glob.glob(str(data_dir / "fashion_mnist" / "*" / "fashion_mnist-train.tfrecord*"))[0]
    content = bytearray(open(record, "rb").read())
    if damage == "truncated":
        content = content[: len(content) * 2 // 3]
    else:
        content[len(content) // 2] ^= 0x10
    open(record, "wb").write(bytes(content))
    log_dir = tmp_path / "logs"
    code, stderr = finish(
        [start("train.py", QUICK + [f"--log_dir={log_dir}", f"--data_dir={data_dir}"])]
    )[0]
    assert code == 3, stderr[-2000:]
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert (
        len(errors) == 1
        and "is corrupt" in errors[0]
        and os.path.dirname(record) in errors[0]
        and "delete" in errors[0]
    )
    assert not log_dir.exists()


def test_debian_file_with_a_wrong_checksum_leaves_nothing_prepared(tmp_path, monkeypatch):
    import shutil

    import tensorflow_datasets as tfds

    from relperf_tf.app import data

    debian = tmp_path / "debian"
    shutil.copytree(data.data_sources.DEBIAN_FASHION_MNIST, debian)
    name = "t10k-labels-idx1-ubyte.gz"
    content = bytearray((debian / name).read_bytes())
    content[-20] ^= 0x01
    (debian / name).write_bytes(bytes(content))
    monkeypatch.setattr(
        data.data_sources, "DEBIAN_FASHION_MNIST", str(debian)
    )  # where the source files are read from
    data_dir = tmp_path / "tfds"
    with pytest.raises(data.DataUnavailableError) as error:
        data.prepare("fashion_mnist", str(data_dir))
    assert "checksum" in str(error.value) and "\n" not in str(error.value)
    assert not tfds.builder("fashion_mnist", data_dir=str(data_dir)).is_prepared()
    assert not [f for _, _, files in os.walk(data_dir) for f in files if ".tfrecord" in f]


@pytest.fixture
def small_disk(tmp_path):
    """A 16 MiB tmpfs (needs root or CAP_SYS_ADMIN: skipped with the reason otherwise)."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        pytest.skip(
            f"cannot mount a small tmpfs here ({result.stderr.strip() or 'mount failed'}): the "
            "full-disk case needs root"
        )
    yield mount_point
    subprocess.run(["umount", "-l", str(mount_point)], check=False)


def fill(directory):
    """Writes zeros into `directory` until the disk is full (unbuffered: closing the file has
    nothing left to write, so it cannot fail on the full disk)."""
    with open(os.path.join(directory, "filler"), "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 65536)
        except OSError:
            pass


def test_full_disk_stops_training_with_the_last_checkpoint_whole(small_disk, fashion_mnist_dir):
    import keras

    log_dir = small_disk / "logs"
    run_dir = log_dir / "default" / "run"
    best = run_dir / "checkpoints" / "best.keras"
    process = start(
        "train.py",
        QUICK[:-2]
        + [
            "--epochs=3",
            "--steps_per_epoch=40",
            "--noprogress_bar",
            f"--log_dir={log_dir}",
            f"--data_dir={fashion_mnist_dir}",
            "--version=run",
        ],
    )
    wait_for(lambda: len(metrics_rows(str(run_dir))) >= 1 and best.exists(), process)
    fill(small_disk)
    code, stderr = finish([process])[0]
    assert code == 5, stderr[-3000:]
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert (
        len(errors) == 1 and "No space left on device" in errors[0] and str(run_dir) in errors[0]
    ), stderr[-3000:]
    assert "Traceback" not in stderr
    os.remove(small_disk / "filler")
    rows = metrics_rows(str(run_dir))
    assert len(rows) >= 1 and all(row["val_accuracy"] for row in rows)  # no torn last line
    keras.models.load_model(best)  # the last best checkpoint is whole
    assert not [f for _, _, files in os.walk(run_dir) for f in files if f.startswith(".tmp-")]


def test_full_disk_export_leaves_no_version(small_disk, tiny_run):
    fill(small_disk)
    os.remove(small_disk / "filler")
    with open(small_disk / "filler", "wb") as f:  # leave ~100 KB: the export starts, then runs out
        f.write(b"\0" * (16 * 2**20 - 100 * 2**10))
    code, stderr = finish(
        [start("export.py", [tiny_run, f"--export_dir={small_disk / 'exported'}"])]
    )[0]
    assert code == 5, stderr[-3000:]
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "No space left on device" in errors[0], stderr[-3000:]
    assert os.listdir(small_disk / "exported") == []


@pytest.mark.slow
def test_sigterm_during_a_trial_is_never_counted_as_done(tmp_path, fashion_mnist_dir):
    """Keras Tuner keeps the interrupted trial RUNNING in its saved state and runs it again on
    resume."""
    tuner_dir = tmp_path / "tuning"
    args = [
        "--model=Performer",
        "--dataset=fashion_mnist",
        f"--data_dir={fashion_mnist_dir}",
        f"--tuner_dir={tuner_dir}",
        "--project_name=p",
        "--max_trials=1",
        "--max_epochs=1",
        "--steps_per_epoch=200",
        "--dims=8",
        "--head_counts=2",
        "--nb_features=4",
        "--depth=1",
        "--batch_size=16",
        "--seed=0",
    ]
    process = start("tune.py", args)
    trial = tuner_dir / "p" / "trial_0" / "trial.json"
    wait_for(trial.exists, process)
    time.sleep(3)  # inside the trial's training
    process.send_signal(signal.SIGTERM)
    code, stderr = finish([process])[0]
    assert code == 128 + signal.SIGTERM, stderr[-2000:]
    assert json.load(open(trial))["status"] == "RUNNING"
    assert (
        not (tuner_dir / "p" / "trials.csv").exists()
        and not (tuner_dir / "p" / "best.keras").exists()
    )
    code, stderr = finish(
        [
            start(
                "tune.py",
                [a for a in args if not a.startswith("--steps_per_epoch")]
                + ["--steps_per_epoch=5"],
            )
        ]
    )[0]
    assert code == 0, stderr[-2000:]
    import csv

    rows = list(csv.DictReader(open(tuner_dir / "p" / "trials.csv")))
    assert [(row["trial_id"], row["status"]) for row in rows] == [
        ("0", "COMPLETED")
    ]  # the interrupted trial, run again


def test_a_signal_exits_128_plus_signum_whatever_its_exit_became(monkeypatch):
    """TensorFlow's tracing context managers assert in `__exit__` when the SystemExit of a
    signal crosses them; the command still exits 128 + signum, after the cleanups ran."""
    import contextlib

    from relperf_tf.app import cli

    monkeypatch.setattr(cli, "_signals_received", [])
    cleaned = []

    @contextlib.contextmanager
    def asserting_on_exit():
        try:
            yield
        finally:
            cleaned.append(True)
            raise AssertionError("Concurrent access?")

    def main(argv):
        with asserting_on_exit():
            cli._exit_on_signal(signal.SIGTERM, None)

    with pytest.raises(SystemExit) as ended:
        cli._main_ending_by_signal(main, [])
    assert ended.value.code == 128 + signal.SIGTERM and cleaned == [True]
    # Without a signal, errors pass through unchanged.
    monkeypatch.setattr(cli, "_signals_received", [])
    with pytest.raises(ZeroDivisionError):
        cli._main_ending_by_signal(lambda argv: 1 / 0, [])
