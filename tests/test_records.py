"""Results records: a record of training runs from their directories, and bad input."""

import json
import os
import subprocess
import sys

from tests.conftest import REPO

TOOL = os.path.join(REPO, "benchmarks", "runs_record.py")


def fake_run(folder, name, accuracy):
    run = folder / name
    run.mkdir()
    (run / "hparams.json").write_text(json.dumps(dict(nb_features=2, causal=False)))
    (run / "test_metrics.json").write_text(json.dumps(dict(test_accuracy=accuracy)))
    return str(run)


def record(tmp_path, runs, columns):
    output = tmp_path / "record.json"
    result = subprocess.run(
        [sys.executable, TOOL, *runs, "--name=n", "--title=T", "--description=D"]
        + [f"--columns={columns}", "--command=python scripts/train.py", f"--output={output}"],
        capture_output=True,
        text=True,
    )
    return result, output


def test_a_record_of_runs_holds_their_numbers_and_provenance(tmp_path):
    runs = [fake_run(tmp_path, "a", 0.5), fake_run(tmp_path, "b", 0.75)]
    result, output = record(tmp_path, runs, "nb_features:m,test_accuracy:test:4")
    assert result.returncode == 0, result.stderr
    written = json.loads(output.read_text())
    assert [r["test_accuracy"] for r in written["rows"]] == [0.5, 0.75]
    assert [c["key"] for c in written["columns"]] == ["run", "nb_features", "test_accuracy"]
    sitting = written["sittings"][0]
    assert set(sitting) >= {"command", "date", "commit", "cpu"}
    assert sitting["command"] == "python scripts/train.py"


def test_bad_columns_and_unfinished_runs_fail_in_one_line_and_write_nothing(tmp_path):
    run = fake_run(tmp_path, "a", 0.5)
    for runs, columns, named in (
        ([run], "test_accuracy", "--columns item 'test_accuracy'"),
        ([run], "missing:x", "has no missing"),
        ([str(tmp_path)], "test_accuracy:t", "has no hparams.json"),
    ):
        result, output = record(tmp_path, runs, columns)
        assert result.returncode == 2
        assert named in result.stderr.strip().splitlines()[-1]
        assert not output.exists()
