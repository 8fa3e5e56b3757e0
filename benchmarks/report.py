"""The whole-model benchmark tables and plots (docs/benchmarks.json, written by
`scripts/benchmark.py`), as `docs/render.py` renders them into docs/benchmarks.md."""

import os


def _plot(path, series, xlabel, ylabel, title, logx=False, logy=False):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 4), dpi=110)
    for label, (xs, ys) in series.items():
        axis.plot(xs, ys, marker="o", label=label)
    axis.set(xlabel=xlabel, ylabel=ylabel, title=title)
    if logx:
        axis.set_xscale("log", base=2)
    if logy:
        axis.set_yscale("log")
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def print_progress(row, digits, hidden):
    """The indented line a benchmark prints for each configuration it measured (`hidden`: a
    field too long to show)."""
    shown = {k: (round(v, digits) if isinstance(v, float) else v) for k, v in row.items()}
    shown.pop(hidden, None)
    print("   ", shown, flush=True)


def _bf16_change(approximation, suffix=", bf16 inputs", tolerance=0.05):
    """A line giving the largest relative change of the error that bf16 inputs cause."""
    changes = [
        abs(bf16["relative_error"] / fp32["relative_error"] - 1)
        for name in approximation
        if name + suffix in approximation
        for fp32, bf16 in zip(approximation[name], approximation[name + suffix])
    ]
    if not changes:
        return []
    worst = max(changes)
    verdict = "within" if worst <= tolerance else "beyond"
    return [
        "",
        f"bf16 inputs change the error by at most {100 * worst:.2f} % of its float32 value "
        f"({verdict} the {100 * tolerance:.0f} % target).",
    ]


def _setting(r):
    """How a row was run, for labels: XLA, remat and/or bf16 (mixed_bfloat16)."""
    bf16 = r.get("precision", "float32") == "mixed_bfloat16"
    parts = [
        name
        for name, on in (("XLA", r["jit_compile"]), ("remat", r.get("remat")), ("bf16", bf16))
        if on
    ]
    return "+".join(parts) or "plain"


def _features(r):
    """The row's random-feature count m, as a table cell ('' for exact attention)."""
    return "" if r.get("nb_features") is None else str(r["nb_features"])


def _overhead(r):
    return f"{100 * r['fit_overhead']:+.1f} %" if "fit_overhead" in r else ""


def _find(rows, model, mode, tokens=1025, key=lambda r: -r["images_per_s"]):
    """The best row (fastest by default) of a model/mode/token count over its settings."""
    found = sorted(
        (r for r in rows if r["model"] == model and r["mode"] == mode and r["tokens"] == tokens),
        key=key,
    )
    return found[0] if found else None


# Absolute targets of an earlier speed issue (reference config, images/s); the
# peers measured side by side (benchmarks/peers/) are the comparison that counts.
PERFORMER_TARGETS = dict(train=27.0, infer=105.0)


def _reference_performer(rows, like, nb_features=110):
    """The Performer row a relative model's row is compared with: the reference config's m, the
    same setting and batch, measured last (a rerun moves a row to the end, so this is the newest
    sitting's); else the fastest Performer training row."""
    same = [
        r
        for r in rows
        if (r["model"], r["mode"], r["tokens"]) == ("Performer", "train", 1025)
        and r.get("nb_features") == nb_features
        and _setting(r) == _setting(like)
        and r["batch_size"] == like["batch_size"]
    ]
    return same[-1] if same else _find(rows, "Performer", "train")


def _targets(rows):
    """The targets of the speed issue, each met or not, from the measured rows."""
    lines = [
        "## Targets (reference config, this CPU; the best setting of each model)",
        "",
        "| target | measured | met |",
        "|---|---|---|",
    ]

    def add(text, value, ok):
        lines.append(f"| {text} | {value} | {'yes' if ok else 'no'} |")

    train, infer = _find(rows, "Performer", "train"), _find(rows, "Performer", "infer")
    for row, text in (
        (train, "Performer training ≥ {:.0f} img/s (stretch ≥ 38)"),
        (infer, "Performer inference ≥ {:.0f} img/s"),
    ):
        if row:
            target = PERFORMER_TARGETS[row["mode"]]
            add(
                text.format(target),
                f"{row['images_per_s']:.1f} img/s ({_setting(row)}){_ceiling(row)}",
                row["images_per_s"] >= target,
            )
    for model, ratio in (("RelativePerformer", 0.8), ("ClippedRelativePerformer", 0.5)):
        # One line per feature count measured (the config fixes m = 110;
        # RelativePerformer's own default is larger, its queries being wider).
        for m in sorted(
            {
                r.get("nb_features")
                for r in rows
                if r["model"] == model and r["mode"] == "train" and r["tokens"] == 1025
            }
        ):
            row = _find([r for r in rows if r.get("nb_features") == m], model, "train")
            base = _reference_performer(rows, row) if row else None
            if base:
                measured = row["images_per_s"] / base["images_per_s"]
                add(
                    f"{model} training ≥ {ratio}× Performer",
                    f"{measured:.2f}× ({_setting(row)}, m = {_features(row)} vs {_features(base)})",
                    measured >= ratio,
                )
    big = _find(rows, "Performer", "train", 16385, key=lambda r: r["peak_rss_gb"])
    if big:
        add(
            "128×128 (16 385 tokens) training at batch 4 in < 4 GB peak RSS",
            f"{big['peak_rss_gb']:.2f} GB ({_setting(big)})",
            big["peak_rss_gb"] < 4,
        )
        same = [
            r
            for r in rows
            if r["model"] == "Performer"
            and r["mode"] == "train"
            and r["batch_size"] == big["batch_size"]
            and _setting(r) == _setting(big)
        ]
        steps = {r["tokens"]: r["ms_per_step"] for r in same}
        pairs = [(t, 4 * t - 3) for t in sorted(steps) if 4 * t - 3 in steps]
        if pairs:
            growth = max(steps[b] / steps[a] for a, b in pairs)
            add(
                "step time ≤ 4.5× per 4× tokens (worst of "
                + ", ".join(f"{a:,}→{b:,}" for a, b in pairs)
                + ")",
                f"{growth:.2f}×",
                growth <= 4.5,
            )
    fitted = [
        r for r in rows if r["mode"] == "train" and r["tokens"] == 1025 and "fit_overhead" in r
    ]
    if fitted:
        worst = max(fitted, key=lambda r: r["fit_overhead"])
        add(
            "`model.fit` ≤ 5 % slower than a hand-written step (worst 32² row)",
            f"{100 * worst['fit_overhead']:+.1f} % ({worst['model']}, {_setting(worst)})",
            worst["fit_overhead"] <= 0.05,
        )
    return lines + [""]


def _ceiling(r):
    """What the row's GEMMs alone allow here, when its floor was measured."""
    if "gemm_floor_ms" not in r:
        return ""
    return (
        f"; its GEMMs alone allow ≤ {1e3 * r['batch_size'] / r['gemm_floor_ms']:.1f} img/s in fp32"
    )


def _floor(rows):
    """Measured step time against the time of the step's matrix products alone."""
    lines = []
    for mode in ("train", "infer"):
        for model in sorted(
            {r["model"] for r in rows if "gemm_floor_ms" in r}, key=lambda name: name != "Performer"
        ):
            r = _find([r for r in rows if "gemm_floor_ms" in r], model, mode)
            if not r:
                continue
            fp32, bf16 = r["gemm_floor_ms"], r["gemm_floor_bf16_ms"]
            lines.append(
                f"| {model} | {mode} | {r['batch_size']} | {_setting(r)} | {r['ms_per_step']:.0f} "
                f"| {r['gemm_gflop']:.1f} | "
                f"{fp32:.0f} ({1e3 * r['batch_size'] / fp32:.1f}) "
                f"| {bf16:.0f} ({1e3 * r['batch_size'] / bf16:.1f}) "
                f"| {r['ms_per_step'] - fp32:.0f} |"
            )
    if not lines:
        return []
    return (
        [
            "## Where the time goes: the GEMM floor",
            "",
            "Every matrix product of the step (`benchmarking.step_gemms`: the Dense layers, "
            "FAVOR+'s projections, "
            "φ(K)ᵀV and φ(Q)·context, and in training their gradients), each timed alone at its "
            "own shape with TensorFlow's "
            "kernels, in the same process as the row. No fp32 step built on these kernels can be "
            "faster than the fp32 floor, "
            "nor a bf16 one than the bf16 floor; the rest of the measured step is element-wise "
            "work (feature maps, LayerNorm, GELU, "
            "residuals), reductions and memory traffic.",
            "",
            "| model | mode | batch | setting | measured ms/step | GEMM GFLOP | fp32 floor ms "
            "(img/s ceiling) | bf16 floor ms (img/s ceiling) | measured − fp32 floor (ms) |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        + lines
        + [""]
    )


def _serving(rows):
    """Latency and throughput of the exported SavedModel's serving_default signature."""
    served = sorted(
        (r for r in rows if r["mode"] == "serve"),
        key=lambda r: (r["model"], r.get("nb_features") or 0),
    )
    if not served:
        return []
    lines = [
        "## Serving: the exported SavedModel",
        "",
        "`serving_default` of `export.export_saved_model` (what TF Serving runs: uint8 28×28×1 "
        "images in, resized and normalised in the graph, "
        "float32 probabilities out), loaded back with `tf.saved_model.load` in the benchmark's "
        "process. Batch 1: 200 calls after a warm-up, "
        "each timed; batch 128: the median window. *XLA*: exported with `--jit_compile` (TF "
        "Serving needs `--xla_cpu_compilation_enabled=true`); its first call at a new batch size "
        "compiles (first call: the first batch-1 call, loading excluded).",
        "",
        "| model | m | setting | batch 1 p50 (ms) | batch 1 p99 (ms) | first call (ms) | batch "
        "| images/s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in served:
        first = f"{r['first_call_ms']:.0f}" if "first_call_ms" in r else ""
        lines.append(
            f"| {r['model']} | {_features(r)} | {_setting(r)} | "
            f"{r['latency_p50_ms']:.1f} | {r['latency_p99_ms']:.1f} | {first} | "
            f"{r['batch_size']} | {r['images_per_s']:.1f} |"
        )
    return lines + [""]


_HEADER = (
    "| model | mode | image | tokens | batch | setting | m | ms/step | images/s | GFLOP/s "
    "| % of matmul peak | peak RSS (GB) | fit vs hand-written |"
)
_RULE = "|---|---|---|---|---|---|---|---|---|---|---|---|---|"


def _order(r):
    return (r["mode"], r["image_size"], r["model"], _setting(r), r.get("nb_features") or 0)


def _row_line(r):
    return (
        f"| {r['model']} | {r['mode']} | {r['image_size']}² | {r['tokens']} | {r['batch_size']} | "
        f"{_setting(r)} | {_features(r)} | "
        f"{r['ms_per_step']:.0f} | {r['images_per_s']:.1f} | {r['gflops_per_s']:.1f} "
        f"| {100 * r['fraction_of_peak']:.1f} | {r['peak_rss_gb']:.2f} | {_overhead(r)} |"
    )


def _profile(profiles):
    """The profiler section: each profiled step's time by kernel category and its largest
    kernels (`benchmarks/profile_step.py --record`)."""
    if not profiles:
        return []
    lines = [
        "## Where the time goes: the profiler",
        "",
        "`benchmarks/profile_step.py --record` (reference config, m = 110): a TensorFlow profiler "
        "trace of a few steps after warm-up (open the trace directory in TensorBoard's Profile tab "
        "for the trace viewer), summed per kernel over the CPU's worker threads, each kernel's own "
        "time without the events nested in it. *Idle cores* is the cores × wall time no kernel "
        "event covers: waiting between kernels, and the share of a multi-threaded kernel (an "
        "Eigen matrix product) that its helper thread runs without an event of its own.",
        "",
    ]
    for label, p in profiles.items():
        total = p["cores"] * p["wall_ms_per_step"]
        lines += [
            f"**{label}** ({'XLA' if p['jit_compile'] else 'plain'}, {p['precision']}, batch "
            f"{p['batch_size']}; {p['cpu']}): {p['wall_ms_per_step']:.0f} ms per step while "
            f"profiled, {p['cores']} cores; the process used "
            f"{100 * p.get('process_cpu_utilization', float('nan')):.0f} % of the cores' time "
            "(user + system, threads spinning while they wait included).",
            "",
            "| category | thread-ms per step | share of the cores' time |",
            "|---|---|---|",
        ]
        lines += [
            f"| {name} | {ms:.0f} | {100 * ms / total:.1f} % |"
            for name, ms in p["categories"].items()
            if ms >= 0.5
        ]
        top = ", ".join(f"{k} {v:.0f}" for k, v in list(p["kernels"].items())[:8])
        lines += ["", f"Largest kernels (thread-ms per step): {top}.", ""]
    return lines


def render_lines(results, folder, title="# Benchmarks"):
    """The Markdown lines of `results` (docs/benchmarks.json's form), plots written to
    `folder`."""
    measured = [r for r in results.get("throughput", []) if "error" not in r]
    # Rows of the CPU of the newest row ("this CPU"); rows from other CPUs are
    # listed apart and never compared with these.
    current = measured[-1].get("cpu") if measured else None
    rows = [r for r in measured if r.get("cpu") == current]
    earlier = [r for r in measured if r.get("cpu") != current]
    failed = [r for r in results.get("throughput", []) if "error" in r]
    lines = [
        title,
        "",
        f"CPU of these rows: {current or 'not recorded'} (TensorFlow on "
        "CPU). "
        "Measured by `scripts/benchmark.py` into `docs/benchmarks.json`; each configuration ran "
        "in its own process: "
        "untimed warm-up, then the median of the timed windows. FLOP counts are analytic "
        "(multiply-adds × 2; training = 3 × forward). "
        "Training is timed per batch inside `model.fit` (a callback's timestamps; a window = one "
        "short `fit` call, its first batch not counted), "
        "alternating with windows of the same step written by hand (GradientTape + Adam in one "
        "`tf.function`): their ratio is the `fit` overhead.",
        "",
    ]
    lines += ["## Throughput and memory", "", _HEADER, _RULE]
    for r in sorted(rows, key=_order):
        lines.append(_row_line(r))
    for r in failed:
        lines.append(
            f"| {r.get('model_name', r.get('model'))} | {r['mode']} | {r['image_size']}² | | "
            f"{r['batch_size']} | | | failed: {r['error']} | | | | | |"
        )
    lines.append("")
    for mode in ("train", "infer"):
        series, memory = {}, {}
        for r in rows:
            if r["mode"] == mode:
                features = _features(r) or "–"
                label = f"{r['model']} ({_setting(r)}, m {features}, batch {r['batch_size']})"
                series.setdefault(label, {})[r["tokens"]] = r["images_per_s"]
                memory.setdefault(label, {})[r["tokens"]] = r["peak_rss_gb"]
        if any(len(v) > 1 for v in series.values()):
            name = f"throughput_{mode}.png"
            _plot(
                os.path.join(folder, name),
                {k: (sorted(v), [v[t] for t in sorted(v)]) for k, v in series.items()},
                "tokens",
                "images/s",
                f"{mode} throughput vs tokens",
                logx=True,
                logy=True,
            )
            lines += [f"![{mode} throughput]({name})", ""]
            name = f"memory_{mode}.png"
            _plot(
                os.path.join(folder, name),
                {k: (sorted(v), [v[t] for t in sorted(v)]) for k, v in memory.items()},
                "tokens",
                "peak RSS (GB)",
                f"{mode} memory vs tokens (linear vs quadratic)",
                logx=True,
                logy=True,
            )
            lines += [f"![{mode} memory]({name})", ""]
    lines += _targets(rows)
    lines += _serving(rows)
    if earlier:
        lines += [
            "## Earlier sittings on other CPUs",
            "",
            "Kept for reference; never compared with the rows above.",
            "",
        ]
        for cpu in sorted({r.get("cpu") or "not recorded" for r in earlier}):
            lines += [f"CPU: {cpu}", "", _HEADER, _RULE]
            lines += [
                _row_line(r)
                for r in sorted(earlier, key=_order)
                if (r.get("cpu") or "not recorded") == cpu
            ] + [""]
    lines += _floor(rows)
    lines += _profile(results.get("profile", {}))
    approximation = results.get("approximation", {})
    if approximation:
        lines += [
            "## FAVOR+ vs exact softmax attention",
            "",
            "Relative error ‖FAVOR+ − exact‖ / ‖exact‖ (1 025 tokens, 4 heads of 32; mean of 5 "
            "draws). Columns marked *bf16 inputs* are what `mixed_bfloat16` changes: the kernel "
            "still computes in float32 but reads q, k, v rounded to bf16 and hands back a bf16 "
            "output; the reference is exact attention of the float32 inputs.",
            "",
            "| features | " + " | ".join(approximation) + " |",
            "|---|" + "---|" * len(approximation),
        ]
        features = [r["nb_features"] for r in next(iter(approximation.values()))]
        for i, m in enumerate(features):
            lines.append(
                f"| {m} | "
                + " | ".join(f"{approximation[k][i]['relative_error']:.3f}" for k in approximation)
                + " |"
            )
        lines += _bf16_change(approximation)
        _plot(
            os.path.join(folder, "approximation.png"),
            {
                k: ([r["nb_features"] for r in v], [r["relative_error"] for r in v])
                for k, v in approximation.items()
            },
            "random features m",
            "relative error",
            "FAVOR+ error vs features",
            logx=True,
            logy=True,
        )
        lines += ["", "![approximation error](approximation.png)", ""]
    return lines
