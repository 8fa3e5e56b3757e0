"""The peer harness (benchmarks/peers/): CPU detection, the side-by-side table, its section of
docs/benchmarks.md, bad flags."""

import os
import subprocess
import sys

import pytest

PEERS = os.path.join(os.path.dirname(__file__), "..", "benchmarks", "peers")
sys.path.insert(0, PEERS)
import peer_table  # noqa: E402


def test_cpu_info_is_the_one_precision_auto_reads():
    from relperf_tf.app import machine

    assert peer_table.cpu_info() == machine.cpu_info()


def _row(name, mode, setting, images_per_s, **extra):
    return dict(
        name=name,
        implementation=name,
        mode=mode,
        setting=setting,
        version=f"{name} 1.0",
        images_per_s=images_per_s,
        peak_rss_gb=1.5,
        **extra,
    )


def _results(rows):
    cpu = dict(
        model_name="Test CPU",
        vendor="V",
        family="6",
        model="1",
        cores=2,
        flags=["avx2"],
        native_bf16=False,
    )
    return dict(
        cpu=cpu,
        workload=dict(
            image_size=32, channels=1, dim=128, depth=4, heads=4, nb_features=110, ff_multiplier=4
        ),
        batch=dict(train=16, infer=128),
        timing=dict(warmup=2, repeats=5, window_steps=3),
        threads=dict(intra_op=2, inter_op=1),
        date="2026-11-26",
        rows=rows,
        skipped=["performer_pytorch bf16 (no native bf16 matmuls on this CPU)"],
    )


def test_table_compares_our_best_setting_with_the_best_peer():
    rows = [
        _row("relperf_tf", "train", "plain", 12.0),
        _row("relperf_tf", "train", "xla", 18.0),
        _row("model_garden", "train", "plain", 9.0),
        _row("model_garden", "train", "xla", 10.0),
        _row("performer_pytorch", "train", "eager", 12.0),
        dict(_row("performer_pytorch", "train", "compile", 0.0), error="inductor failed"),
        _row("relperf_tf", "infer", "xla", 60.0),
        _row("model_garden", "infer", "xla", 30.0),
        _row("performer_pytorch", "infer", "eager", 20.0),
    ]
    text = "\n".join(peer_table.render(_results(rows)))
    assert "**Test CPU** (V family 6 model 1), 2 cores, flags avx2; native bf16 matmuls: no" in text
    assert "| relperf_tf | relperf_tf 1.0 | xla | 18.0 | 60.0 | 1.50 |" in text
    assert (
        "| performer_pytorch | performer_pytorch 1.0 | compile | failed: inductor failed |  |  |"
        in text
    )
    # 18 / 12 (performer-pytorch eager beats Model Garden's best, 10) = 1.50: met; 60 / 30 = 2.00.
    assert (
        "| train | 18.0 img/s (xla) | 12.0 img/s (performer_pytorch, eager) | 1.50× | met |" in text
    )
    assert "| infer | 60.0 img/s (xla) | 30.0 img/s (model_garden, xla) | 2.00× | met |" in text
    assert "Not run: performer_pytorch bf16 (no native bf16 matmuls on this CPU)." in text
    slower = [
        dict(r, images_per_s=11.0)
        if (r["name"], r["setting"], r["mode"]) == ("relperf_tf", "xla", "train")
        else r
        for r in rows
    ]
    assert (
        "| train | 12.0 img/s (plain) | 12.0 img/s (performer_pytorch, eager) | 1.00× | not met |"
        in "\n".join(peer_table.render(_results(slower)))
    )


def test_rounds_report_their_median_and_range_and_other_modes_are_kept(tmp_path):
    import run

    runs = [
        _row("relperf_tf", "train", "xla", ips, ms_per_step=16000 / ips) for ips in (12, 14, 13)
    ]
    runs.append(dict(_row("relperf_tf", "train", "xla", 0.0), error="killed"))
    median = run.median_round(runs)
    assert median["images_per_s"] == 13 and median["round_images_per_s"] == [14, 13, 12]
    assert run.median_round(runs[-1:])["error"] == "killed"
    # A train-only rerun keeps the earlier inference rows of the same CPU, and says when each ran.
    earlier = _results(
        [_row("relperf_tf", "train", "xla", 10.0), _row("relperf_tf", "infer", "xla", 40.0)]
    )
    earlier["date"] = "2026-11-20"
    path = tmp_path / "peers.json"
    path.write_text(__import__("json").dumps(earlier))
    kept = run.kept_rows(str(path), earlier["cpu"], {("train", "relperf_tf")})
    assert [(r["mode"], r["date"]) for r in kept] == [("infer", "2026-11-20")]
    assert run.kept_rows(str(path), dict(earlier["cpu"], model_name="Other"), set()) == []
    text = "\n".join(peer_table.render(_results([dict(median, date="2026-11-26")] + kept)))
    assert "| relperf_tf | relperf_tf 1.0 | xla | 13.0 (12.0–14.0) | 40.0 | 1.50 |" in text
    assert "on 2026-11-20 (infer), 2026-11-26 (train); rows with a range ran 3 rounds" in text


@pytest.mark.parametrize(
    "flag, named",
    [
        ("--implementations=ours", "flag --implementations: 'ours' is not allowed"),
        ("--modes=serve", "flag --modes: 'serve' is not allowed"),
        ("--timeout=0", "flag --timeout=0 is not allowed"),
        ("--rounds=0", "flag --rounds=0 is not allowed"),
    ],
)
def test_bad_flags_fail_in_one_line_and_write_nothing(tmp_path, flag, named):
    output = tmp_path / "peers.json"
    result = subprocess.run(
        [
            sys.executable,
            os.path.join(PEERS, "run.py"),
            flag,
            f"--output={output}",
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith(f"error: {named}")
    assert not output.exists()
