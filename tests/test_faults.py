"""Faults beyond flags, provoked for real: concurrent runs and exports."""

import json
import os
import subprocess
import sys

import pytest

from relperf_tf import training
from tests.conftest import REPO

SCRIPTS = os.path.join(REPO, "scripts")
QUICK = ["--model=Performer", "--dataset=fashion_mnist", "--dim=8", "--depth=1", "--heads=2", "--nb_features=4", "--batch_size=16", "--epochs=1", "--steps_per_epoch=2", "--noprogress_bar"]


def start(name, args):
    return subprocess.Popen([sys.executable, os.path.join(SCRIPTS, name)] + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(processes):
    results = [(p.wait(timeout=600), p.stderr.read()) for p in processes]
    for p in processes:
        p.stdout.close()
        p.stderr.close()
    return results


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, fashion_mnist_dir):
    config = training.resolve_config(
        "Performer", "fashion_mnist", log_dir=str(tmp_path_factory.mktemp("logs")), data_dir=fashion_mnist_dir,
        dim=8, depth=1, heads=2, nb_features=4, batch_size=32, epochs=1, steps_per_epoch=2, seed=0, verbose=0,
    )
    return training.train(config)["run_dir"]


def test_two_runs_started_together_get_their_own_versions(tmp_path, fashion_mnist_dir):
    """Both plan version_0 at start; the directory is claimed atomically later, so one moves on."""
    log_dir = str(tmp_path / "logs")
    runs = [start("train.py", QUICK + [f"--log_dir={log_dir}", f"--data_dir={fashion_mnist_dir}", f"--seed={seed}"]) for seed in (1, 2)]
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
    for code, stderr in finish([start("export.py", [tiny_run, f"--export_dir={export_dir}"]) for _ in range(2)]):
        assert code == 0, stderr[-2000:]
    assert sorted(os.listdir(export_dir)) == ["1", "2"]  # no staging directory left
    for version in ("1", "2"):
        assert os.path.exists(os.path.join(export_dir, version, "saved_model.pb"))
        assert os.path.exists(os.path.join(export_dir, version, "assets.extra", "relperf.json"))
