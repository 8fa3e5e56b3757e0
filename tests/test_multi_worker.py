"""--strategy=multi_worker: TF_CONFIG checks, and two real workers on loopback."""

import csv
import json
import os
import socket
import subprocess
import sys
import time

import keras
import numpy as np
import pytest

from relperf_tf.app import multi_worker, training
from tests.conftest import REPO

TRAIN = os.path.join(REPO, "scripts", "train.py")
# Real Fashion-MNIST, a tiny Performer, FAVOR+ redraws every 5 steps (two per run).
RUN = [
    "--model=Performer",
    "--dataset=fashion_mnist",
    "--preset=tiny",
    "--dim=8",
    "--depth=1",
    "--heads=2",
    "--nb_features=2",
    "--feature_redraw_interval=5",
    "--epochs=3",
    "--steps_per_epoch=6",
    "--seed=3",
    "--ema_momentum=0.5",  # its average must survive the kill too, and match fit's
    "--exp_name=mw",
    "--noprogress_bar",
]


def tf_config(workers, index, task_type="worker"):
    return json.dumps({"cluster": {"worker": workers}, "task": {"type": task_type, "index": index}})


def test_reads_the_cluster_and_the_chief():
    cluster = multi_worker.read_cluster({"TF_CONFIG": tf_config(["a:1", "b:2"], 1)})
    assert cluster.workers == ("a:1", "b:2") and cluster.index == 1 and not cluster.is_chief
    assert multi_worker.read_cluster({"TF_CONFIG": tf_config(["a:1"], 0)}).is_chief


@pytest.mark.parametrize(
    "value, expected",
    [
        (None, "is not set"),
        ("{cluster", "is not valid JSON"),
        (json.dumps({"cluster": {"worker": ["a:1"]}}), "needs a 'cluster' and a 'task'"),
        (
            json.dumps(
                {
                    "cluster": {"worker": ["a:1"], "ps": ["b:2"]},
                    "task": {"type": "worker", "index": 0},
                }
            ),
            "has jobs ['ps']",
        ),
        (tf_config([], 0), "is not a non-empty list"),
        (tf_config(["localhost"], 0), "is not a non-empty list of 'host:port'"),
        (tf_config(["a:1"], 0, "chief"), "task.type='chief' is not allowed"),
        (tf_config(["a:1", "b:2"], 2), "task.index=2 is outside the cluster; use 0 … 1"),
        (tf_config(["a:1"], True), "task.index=True is outside"),
    ],
)
def test_unusable_tf_config_is_one_line(value, expected):
    environ = {} if value is None else {"TF_CONFIG": value}
    with pytest.raises(ValueError, match="TF_CONFIG") as error:
        multi_worker.read_cluster(environ)
    message = str(error.value)
    assert expected in message and "\n" not in message


def test_options_it_cannot_run_are_rejected():
    cluster = multi_worker.Cluster(("a:1", "b:2"), 0)
    with pytest.raises(
        ValueError, match=r"--cpu_replicas=2 is not allowed with --strategy=multi_worker"
    ):
        multi_worker.check_config(
            training.resolve_config(
                "Performer", "fashion_mnist", strategy="multi_worker", cpu_replicas=2
            ),
            cluster,
        )
    with pytest.raises(ValueError, match=r"--batch_size=15 is not divisible by the 2 workers"):
        multi_worker.check_config(
            training.resolve_config(
                "Performer", "fashion_mnist", strategy="multi_worker", batch_size=15
            ),
            cluster,
        )
    with pytest.raises(ValueError, match="multi_worker has its own training loop|not allowed"):
        training.make_strategy("multi_worker")


@pytest.mark.parametrize(
    "environ, extra, expected",
    [
        ({}, [], "TF_CONFIG is not set"),
        (
            {"TF_CONFIG": tf_config(["127.0.0.1:1", "127.0.0.1:2"], 0)},
            ["--cpu_replicas=2"],
            "--cpu_replicas=2 is not allowed with --strategy=multi_worker",
        ),
    ],
)
def test_cli_rejects_bad_clusters_before_any_work(tmp_path, environ, extra, expected):
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"} | environ
    result = subprocess.run(
        [sys.executable, TRAIN, "--strategy=multi_worker", f"--log_dir={tmp_path}"] + RUN + extra,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and expected in errors[0]
    assert os.listdir(tmp_path) == []


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _start_workers(args, out_dir, tag):
    workers = [f"127.0.0.1:{port}" for port in _free_ports(2)]
    processes = []
    os.makedirs(os.path.join(out_dir, "tmp"), exist_ok=True)
    for index in range(2):
        env = dict(
            os.environ, TF_CONFIG=tf_config(workers, index), TMPDIR=os.path.join(out_dir, "tmp")
        )
        log = open(os.path.join(out_dir, f"{tag}-worker{index}.log"), "w")
        processes.append(
            subprocess.Popen(
                [sys.executable, TRAIN, "--strategy=multi_worker"] + args,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )
    return processes


def _output(out_dir, tag, index):
    return open(os.path.join(out_dir, f"{tag}-worker{index}.log")).read()


def _result(text):
    """The JSON result a finished train.py prints last."""
    text = "\n" + text  # the JSON may be all it printed (no start-up lines before it)
    return json.loads(text[text.rindex("\n{") :])


def _rows(run_dir):
    with open(os.path.join(run_dir, "metrics.csv")) as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_two_workers_on_loopback_survive_a_kill_and_match_one_process(tmp_path, fashion_mnist_dir):
    """Two workers: worker 1 is killed after the first epoch, the chief exits 6 at
    once; both resume and finish with identical weights, equal (to float
    rounding: all-reduce sums in another order) to one process training the
    same global batch with `fit`."""
    log_dir, out = str(tmp_path / "logs"), str(tmp_path)
    args = RUN + [f"--log_dir={log_dir}", f"--data_dir={fashion_mnist_dir}", "--version=two"]
    single = subprocess.Popen(
        [sys.executable, TRAIN, "--strategy=default"]
        + RUN
        + [f"--log_dir={log_dir}", f"--data_dir={fashion_mnist_dir}", "--version=one"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    run_dir = os.path.join(log_dir, "mw", "two")
    processes = _start_workers(args, out, "first")
    try:
        deadline = time.time() + 300
        while not (os.path.exists(os.path.join(run_dir, "metrics.csv")) and _rows(run_dir)):
            assert processes[0].poll() is None and time.time() < deadline, _output(out, "first", 0)[
                -3000:
            ]
            time.sleep(0.2)
        processes[1].kill()
        killed = time.time()
        assert processes[0].wait(timeout=120) == 6, _output(out, "first", 0)[-3000:]
        assert time.time() - killed < 60
        chief_error = [
            line for line in _output(out, "first", 0).splitlines() if line.startswith("error:")
        ]
        assert (
            len(chief_error) == 1
            and "lost contact with another worker" in chief_error[0]
            and "--resume" in chief_error[0]
        )
    finally:
        for p in processes:
            p.kill()
            p.wait()

    left_by_kill = set(
        os.listdir(os.path.join(out, "tmp"))
    )  # SIGKILL leaves worker 1's temporary directory
    processes = _start_workers(args + ["--resume"], out, "resumed")
    codes = [p.wait(timeout=300) for p in processes]
    assert codes == [0, 0], [_output(out, "resumed", i)[-3000:] for i in range(2)]
    chief, other = (_result(_output(out, "resumed", i)) for i in range(2))
    # Same weights on both workers, FAVOR+ projections (redrawn at steps 5, 10, 15) included.
    assert chief["weights_sha256"] == other["weights_sha256"]
    assert chief["run_dir"] == run_dir and other["run_dir"] is None
    for name in (
        "hparams.json",
        "metrics.csv",
        "test_metrics.json",
        os.path.join("checkpoints", "best.keras"),
        "tensorboard",
    ):
        assert os.path.exists(os.path.join(run_dir, name)), name
    assert not os.path.exists(
        os.path.join(run_dir, "backup")
    )  # finished runs keep no backup, as with fit
    workers = json.load(open(os.path.join(run_dir, "hparams.json")))["workers"]
    assert len(workers) == 2 and all(w.startswith("127.0.0.1:") for w in workers)
    rows = _rows(run_dir)
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2]  # continuous across the kill

    assert single.wait(timeout=300) == 0, single.stderr.read()[-3000:]
    single.stderr.close()
    single_dir = os.path.join(log_dir, "mw", "one")
    for mine, theirs in zip(rows, _rows(single_dir)):
        for column in ("loss", "accuracy", "val_loss", "val_accuracy"):
            assert float(mine[column]) == pytest.approx(
                float(theirs[column]), rel=1e-5, abs=1e-6
            ), (mine["epoch"], column)
    two = keras.models.load_model(os.path.join(run_dir, "checkpoints", "best.keras"))
    one = keras.models.load_model(os.path.join(single_dir, "checkpoints", "best.keras"))
    assert multi_worker.weights_digest(two) == chief["weights_sha256"]
    for a, b, weight in zip(two.get_weights(), one.get_weights(), two.weights):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6, err_msg=weight.path)
    assert sorted(os.listdir(os.path.join(log_dir, "mw"))) == ["one", "two"]
    assert not [
        name
        for name in set(os.listdir(os.path.join(out, "tmp"))) - left_by_kill
        if name.startswith("relperf-worker")
    ]  # deleted by its worker


def test_a_diverging_run_stops_every_worker_with_exit_4(tmp_path, fashion_mnist_dir):
    args = RUN + [
        f"--log_dir={tmp_path / 'logs'}",
        f"--data_dir={fashion_mnist_dir}",
        "--epochs=1",
        "--steps_per_epoch=3",
        "--nojit_compile",
        "--learning_rate=1e30",
        "--schedule=constant",
        "--warmup=0",
    ]
    processes = _start_workers(args, str(tmp_path), "nan")
    codes = [p.wait(timeout=300) for p in processes]
    assert codes == [4, 4], [_output(str(tmp_path), "nan", i)[-3000:] for i in range(2)]
    for index in range(2):
        errors = [
            line
            for line in _output(str(tmp_path), "nan", index).splitlines()
            if line.startswith("error:")
        ]
        assert (
            len(errors) == 1
            and "loss became NaN/Inf" in errors[0]
            and "on every worker" in errors[0]
        )
