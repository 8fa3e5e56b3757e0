"""The shift experiment: exact pixel shifts, image selection, the script's CSV and plot."""

import csv

import numpy as np
import pytest

from relperf_tf.app import data, shift
from tests.conftest import run_script


def test_shift_moves_pixels_exactly_and_wraps_only_empty_columns():
    rng = np.random.default_rng(0)
    images = np.zeros((3, 6, 20, 1), "uint8")
    images[0, :, 5:15] = rng.integers(1, 255, size=(6, 10, 1))  # 5 empty columns each side
    images[1, :, 4:15] = 7  # only 4 empty columns on the left
    images[2, :, 5:16] = 9  # only 4 on the right
    np.testing.assert_array_equal(shift.empty_border_mask(images, 5), [True, False, False])
    np.testing.assert_array_equal(shift.empty_border_mask(images, 4), [True, True, True])
    for s in range(-5, 6):
        moved = shift.shift_images(images[:1], s)
        np.testing.assert_array_equal(
            moved[0, :, 5 + s : 15 + s], images[0, :, 5:15]
        )  # moved exactly
        assert moved.sum() == images[:1].sum()  # nothing lost
        assert np.count_nonzero(moved) == np.count_nonzero(images[:1])


def test_selection_refuses_when_nothing_qualifies(fashion_mnist_dir):
    images, labels = shift.select_images("fashion_mnist", [1], 8, fashion_mnist_dir)
    assert len(images) > 100 and set(labels) == {1}
    resized = np.array(data.preprocess(images, "fashion_mnist", "lookup"))
    assert shift.empty_border_mask(resized, 8).all()
    with pytest.raises(ValueError, match="no fashion_mnist test image"):
        shift.select_images("fashion_mnist", [1], 16, fashion_mnist_dir)
    with pytest.raises(ValueError, match="dataset='cifar10'"):
        shift.select_images("cifar10", [1], 8)


@pytest.mark.slow
def test_shift_script_writes_csv_and_plot(tmp_path, tiny_run):
    run_dir, _ = tiny_run
    output, plot = tmp_path / "shift.csv", tmp_path / "shift.png"
    result = run_script(
        "shift_robustness.py",
        [run_dir, "--labels=1", "--max_shift=4", f"--output={output}", f"--plot={plot}"],
    )
    assert result.returncode == 0, result.stderr[-2000:]
    rows = list(csv.DictReader(open(output)))
    assert [int(r["shift"]) for r in rows] == list(range(-4, 5))
    assert all(0 <= float(r["accuracy_mean"]) <= 1 and int(r["images"]) > 0 for r in rows)
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and plot.stat().st_size > 10_000
    refused = run_script(
        "shift_robustness.py",
        [run_dir, "--labels=1", "--max_shift=16", f"--output={tmp_path / 'no.csv'}"],
    )
    assert refused.returncode != 0 and "no fashion_mnist test image" in refused.stderr
    assert not (tmp_path / "no.csv").exists()
    stepped = run_script(
        "shift_robustness.py",
        [run_dir, "--labels=1", "--max_shift=4", "--shift_step=3", f"--output={output}"],
    )
    assert stepped.returncode == 0, stepped.stderr[-2000:]
    assert [int(r["shift"]) for r in csv.DictReader(open(output))] == [-4, -3, 0, 3, 4]
    refused = run_script(
        "shift_robustness.py", [run_dir, "--shift_step=0", f"--output={tmp_path / 'no.csv'}"]
    )
    assert refused.returncode == 2 and "--shift_step=0" in refused.stderr
    assert not (tmp_path / "no.csv").exists()


def test_shift_experiment_on_the_saved_model_matches_the_run(exported):
    """The `logits` signature runs the shift test on what is served: best.keras' curve."""
    run_dir, export_dir = exported
    rows = shift.run_shift_experiment([run_dir, export_dir], [1], 4, step=4)
    by_source = {}
    for row in rows:
        by_source.setdefault(row["run_dir"], []).append(
            (row["shift"], row["accuracy_mean"], row["loss_mean"])
        )
    (first, curve), (second, other) = sorted(by_source.items())
    assert [r[0] for r in curve] == [-4, 0, 4]
    np.testing.assert_allclose(np.array(curve), np.array(other), atol=1e-5)
    assert {row["model"] for row in rows} == {"RelativePerformer"}


def test_curve_table_and_labels_name_each_source():
    rows = (
        [
            dict(
                run_dir="/r/logs/demo/20261201-143235",
                model="RelativePerformer (circular)",
                shift=s,
                accuracy_mean=a,
            )
            for s, a in ((-4, 0.9), (0, 0.91), (4, 0.9))
        ]
        + [
            dict(run_dir="/r/saved_models/perf/1", model="Performer", shift=s, accuracy_mean=a)
            for s, a in ((-4, 0.0), (0, 0.98), (4, 0.01))
        ]
        + [
            dict(
                run_dir="/r/saved_models/rel/1",
                model="RelativePerformer (circular)",
                shift=0,
                accuracy_mean=0.99,
            )
        ]
    )
    labels = shift.curve_labels(rows)
    assert labels == {
        "/r/logs/demo/20261201-143235": "RelativePerformer (circular) [20261201-143235]",
        "/r/saved_models/perf/1": "Performer",
        "/r/saved_models/rel/1": "RelativePerformer (circular) [rel]",
    }
    lines = shift.curve_table(rows).splitlines()
    assert lines[0].split()[-3:] == ["-4", "+0", "+4"]
    assert lines[2].split()[-3:] == ["0.000", "0.980", "0.010"]
    assert lines[3].split()[-1] == "0.990" and len(lines) == 4


def test_curves_beside_are_read_back_at_the_new_curves_shifts(tmp_path):
    """--beside: a shift CSV round-trips with its numbers; only the shifts measured now are
    kept; another label set or a file that is not a shift CSV is one clear error."""
    old = [
        dict(
            run_dir="/r/saved_models/perf/1",
            model="Performer",
            dataset="fashion_mnist",
            labels="1",
            shift=s,
            images=791,
            accuracy_mean=a,
            accuracy_std=0.1,
            loss_mean=1.5,
            loss_std=0.5,
        )
        for s, a in ((-2, 0.2), (-1, 0.9), (0, 0.98), (1, 0.97), (2, 0.7))
    ]
    path = str(tmp_path / "shift.csv")
    shift.write_csv(old, path)
    assert shift.read_csv(path) == old
    new = [
        dict(old[0], run_dir="/r/logs/demo/x", model="RelativePerformer", shift=s)
        for s in (-2, 0, 2)
    ]
    beside = shift.rows_beside(new, [path])
    assert [(r["shift"], r["accuracy_mean"]) for r in beside] == [(-2, 0.2), (0, 0.98), (2, 0.7)]
    lines = shift.curve_table(beside + new).splitlines()
    assert lines[1].split()[-3:] == ["0.200", "0.980", "0.700"] and len(lines) == 3
    other = str(tmp_path / "other.csv")
    shift.write_csv([dict(r, labels="7") for r in old], other)
    with pytest.raises(ValueError, match="--beside=.*other.csv.*labels '1'"):
        shift.rows_beside(new, [other])
    not_shift = tmp_path / "results.csv"
    not_shift.write_text("run_dir,test_accuracy\nx,0.5\n")
    with pytest.raises(ValueError, match="is not a shift CSV"):
        shift.read_csv(str(not_shift))
    with pytest.raises(ValueError, match="cannot be read"):
        shift.read_csv(str(tmp_path / "missing.csv"))
