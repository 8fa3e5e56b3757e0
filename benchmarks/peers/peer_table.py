"""The CPU at hand, and the side-by-side peer table (Markdown) from run.py's results."""

OURS = "relperf_tf"
TARGET_RATIO = 1.5


def cpu_info(path="/proc/cpuinfo"):
    """The CPU at hand (model, family/model, flags that matter, native bf16):
    `relperf_tf.app.machine.cpu_info`, which `--precision=auto` reads too."""
    from relperf_tf.app import machine

    return machine.cpu_info(path)


def _best(rows, name, mode):
    found = [r for r in rows if r["name"] == name and r["mode"] == mode and "error" not in r]
    return max(found, key=lambda r: r["images_per_s"]) if found else None


def _dates(results):
    """When the rows were measured, and how many rounds (`run.py --rounds`) each mode had."""
    by_date = {}
    for r in results["rows"]:
        by_date.setdefault(r.get("date", results["date"]), set()).add(r["mode"])
    if len(by_date) == 1:
        text = next(iter(by_date))
    else:
        text = ", ".join(f"{d} ({'/'.join(sorted(m))})" for d, m in sorted(by_date.items()))
    rounds = max((len(r.get("round_images_per_s", [])) for r in results["rows"]), default=0)
    if rounds > 1:
        text += (
            f"; rows with a range ran {rounds} rounds, round after round, and show the median "
            "round (the range of all rounds)"
        )
    return text


def render(results):
    """Markdown lines: the CPU, every implementation × setting, and ours against the best peer per
    mode."""
    cpu, w, rows = results["cpu"], results["workload"], results["rows"]
    cpu_flags = ", ".join(cpu["flags"]) or "none of avx2, avx512f, avx512_bf16, amx_tile, amx_bf16"
    lines = [
        "## Peers, measured side by side",
        "",
        f"Run by `benchmarks/peers/run.py` on {_dates(results)}: **{cpu['model_name']}** "
        f"({cpu['vendor']} family {cpu['family']} model {cpu['model']}), "
        f"{cpu['cores']} cores, flags {cpu_flags}; "
        f"native bf16 matmuls: {'yes' if cpu['native_bf16'] else 'no'}. "
        f"Workload: {w['image_size']}×{w['image_size']}×{w['channels']} images "
        f"({w['image_size'] ** 2 + 1} tokens), dim {w['dim']}, depth {w['depth']}, "
        f"heads {w['heads']}, m = {w['nb_features']}, Dense({w['ff_multiplier']}·dim) GELU, "
        "learned absolute positions, class token; "
        f"training batch {results['batch']['train']} (forward, backward, Adam), inference batch "
        f"{results['batch']['infer']}; "
        f"threads intra {results['threads']['intra_op']} / inter "
        f"{results['threads']['inter_op']}; each configuration in a fresh process, "
        f"{results['timing']['warmup']} warm-up steps, median of {results['timing']['repeats']} "
        f"windows of {results['timing']['window_steps']} steps; "
        "random data created once from seed 0; every process with the same glibc malloc settings.",
        "",
        "| implementation | version | setting | train img/s | infer img/s | train peak RSS (GB) |",
        "|---|---|---|---|---|---|",
    ]
    keys = []
    for r in rows:
        if (r["name"], r["setting"]) not in keys:
            keys.append((r["name"], r["setting"]))

    def cell(name, setting, mode, field, fmt):
        found = [r for r in rows if (r["name"], r["setting"], r["mode"]) == (name, setting, mode)]
        if not found:
            return ""
        if "error" in found[0]:
            return f"failed: {found[0]['error']}" if field == "images_per_s" else ""
        rounds = found[0].get("round_images_per_s", [])
        if field == "images_per_s" and len(rounds) > 1:
            return f"{found[0][field]:{fmt}} ({min(rounds):{fmt}}–{max(rounds):{fmt}})"
        return format(found[0][field], fmt)

    for name, setting in keys:
        version = next((r["version"] for r in rows if r["name"] == name and "version" in r), "")
        lines.append(
            f"| {name} | {version} | {setting} "
            f"| {cell(name, setting, 'train', 'images_per_s', '.1f')} "
            f"| {cell(name, setting, 'infer', 'images_per_s', '.1f')} "
            f"| {cell(name, setting, 'train', 'peak_rss_gb', '.2f')} |"
        )
    lines += [
        "",
        f"| mode | {OURS} (best setting) | best peer (setting) | ratio | target ≥ {TARGET_RATIO}× "
        "|",
        "|---|---|---|---|---|",
    ]
    for mode in ("train", "infer"):
        ours = _best(rows, OURS, mode)
        peers = [
            p
            for p in (
                _best(rows, name, mode) for name in {r["name"] for r in rows if r["name"] != OURS}
            )
            if p
        ]
        if not (ours and peers):
            continue
        peer = max(peers, key=lambda r: r["images_per_s"])
        ratio = ours["images_per_s"] / peer["images_per_s"]
        lines.append(
            f"| {mode} | {ours['images_per_s']:.1f} img/s ({ours['setting']}) | "
            f"{peer['images_per_s']:.1f} img/s ({peer['name']}, {peer['setting']}) | "
            f"{ratio:.2f}× | {'met' if ratio >= TARGET_RATIO else 'not met'} |"
        )
    for skipped in results.get("skipped", []):
        lines.append(f"\nNot run: {skipped}.")
    return lines + [""]
