"""docs/benchmarks.md from `run_all.py`'s rows and raw numbers: the plots, the summary table and the sections
run_all owns (OWNED). The prose that explains them is the hand-written section "How the numbers are measured"
of docs/benchmarks.md, which `compose` keeps like every section run_all does not own."""
from __future__ import annotations

import os
from pathlib import Path

from benchlib import CLOCK, Row

OWNED = ("Machine", "Training", "Attacks", "Data", "Memory", "Scaling", "GPU")
PLOT_DPI = 150        # figures people read (tests/test_benchmarks.py checks it)
PLOTS = {"pgd": "bench_pgd_steps.png", "train": "bench_train_batches.png", "transfer": "bench_transfer_per_class.png",
         "memory": "bench_memory_trials.png"}


# --------------------------------------------------------------------------------------------- plots

def plots(raw: dict, out_dir: Path) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made = {}
    clock = "CPU seconds" if CLOCK == "cpu" else "seconds"

    def save(fig, key):
        path = out_dir / PLOTS[key]
        fig.tight_layout()
        fig.savefig(path, dpi=PLOT_DPI)
        plt.close(fig)
        made[key] = path.name

    mem = {k: v for k, v in raw.get("memory", {}).items() if isinstance(v, dict) and v.get("peak_mib")}
    if mem:
        fig, ax = plt.subplots(figsize=(4.2, 3))
        for (k, s), style in zip(mem.items(), ("o-", "s--")):
            ax.plot(s["trials"], s["peak_mib"], style, label=f"{k} (peak)")
            ax.plot(s["trials"], s["rss_mib"], style[0] + ":", alpha=0.6, label=f"{k} (current)")
        ax.set(xlabel="trials run in one process", ylabel="RSS (MiB)", title="memory vs search trials")
        ax.set_xticks(next(iter(mem.values()))["trials"])
        ax.set_ylim(bottom=0)
        ax.legend(fontsize=7)
        save(fig, "memory")
    if "pgd_scaling" in raw.get("attacks", {}):
        s = raw["attacks"]["pgd_scaling"]
        fig, ax = plt.subplots(figsize=(4.2, 3))
        ax.plot(s["steps"], s["plain_s"], "o-", label="plain")
        ax.plot(s["steps"], s["ee_s"], "s--", label="early exit")
        ax.set(xlabel="PGD steps", ylabel=clock, title=f"PGD time vs steps ({s['n']} images)")
        ax.set_xticks(s["steps"])
        ax.legend()
        save(fig, "pgd")
    if "train_scaling" in raw.get("train", {}):
        s = raw["train"]["train_scaling"]
        fig, ax = plt.subplots(figsize=(4.2, 3))
        ax.plot(s["counts"], s["seconds"], "o-")
        ax.set(xlabel="minibatches", ylabel=clock, title=f"{s['arch']} training vs batches (batch {s['batch']})")
        ax.set_xticks(s["counts"])
        save(fig, "train")
    t = raw.get("transfer", {})
    if t.get("cached_s"):
        fig, ax = plt.subplots(figsize=(4.2, 3))
        ns = sorted(t["cached_s"])
        ax.plot(ns, [t["cached_s"][n] for n in ns], "o-", label="feature cache")
        nu = sorted(t["uncached_s"])
        ax.plot(nu, [t["uncached_s"][n] for n in nu], "s--", label="extractor every epoch")
        ax.set(xlabel="per_class N", ylabel="seconds (wall)", title="transfer head (50 epochs) vs N", yscale="log")
        ax.legend()
        save(fig, "transfer")
    return made


# ---------------------------------------------------------------------------------------------- docs

def table(rows: list[Row]) -> str:
    other = "wall" if CLOCK == "cpu" else "CPU"
    lines = [f"| section | what | measured as | value | by {other} time | target | result |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        alt = "" if r.alt is None else (f"{r.alt:.2g}" if abs(r.alt) < 0.01 else f"{r.alt:.3f}" if abs(r.alt) < 10
                                         else f"{r.alt:.1f}")
        lines.append(f"| {r.section} | {r.name} | {r.measured_as} | {r.value_text()} | {alt} | {r.target_text()} | "
                     f"**{r.status}** |")
    return "\n".join(lines)


def misses(rows: list[Row]) -> str:
    bad = [r for r in rows if r.status == "FAIL"]
    if not bad:
        return "Every row here meets its target.\n"
    out = ["Rows that miss their target, and what limits them:", ""]
    out += [f"- **{r.name}** ({r.value_text()}, target {r.target_text()}): {r.note}" for r in bad]
    return "\n".join(out) + "\n"


def flips(rows: list[Row]) -> str:
    """Rows whose verdict the other clock would change, in words."""
    other = "wall" if CLOCK == "cpu" else "CPU"
    out = []
    for r in rows:
        if r.target is None or r.value is None or r.alt is None:
            continue
        ok = r.alt >= r.target if r.better == ">=" else r.alt <= r.target
        if ok != (r.status == "PASS"):
            out.append(f"{r.name} ({r.alt:.3f} → {'PASS' if ok else 'FAIL'})")
    if not out:
        return f"By {other} time every row keeps its verdict."
    return (f"By {other} time these rows would change verdict: {'; '.join(out)}. On a machine where the process "
            f"shares its 2 cores with other jobs, wall time also counts the time it waited for them.")




def split_sections(text: str) -> tuple[str, list[tuple[str, str]]]:
    """(preamble, [(title, whole section text)]) of a markdown file split at '## ' headings."""
    pre, sections, cur_title, cur = [], [], None, []
    for line in text.splitlines(keepends=True):
        if line.startswith("## "):
            if cur_title is not None:
                sections.append((cur_title, "".join(cur)))
            cur_title, cur = line[3:].strip(), [line]
        elif cur_title is None:
            pre.append(line)
        else:
            cur.append(line)
    if cur_title is not None:
        sections.append((cur_title, "".join(cur)))
    return "".join(pre), sections


def compose(path: Path, preamble: str, mine: dict[str, str]) -> str:
    """Our preamble and sections (in OWNED order), then every other section of the existing file, unchanged."""
    old = path.read_text() if path.exists() else ""
    _, sections = split_sections(old)
    parts = [preamble.rstrip("\n") + "\n"]
    parts += ["\n" + mine[t].rstrip("\n") + "\n" for t in OWNED if t in mine]
    parts += ["\n" + body.rstrip("\n") + "\n" for title, body in sections if title not in OWNED]
    return "".join(parts)


def _faster(v: float) -> str:
    if v > 1.05:
        return f"channels_last {v:.2f}× faster"
    if v < 1 / 1.05:
        return f"NCHW {1 / v:.2f}× faster"
    return "about even"


def f3(x) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def render(rows: list[Row], raw: dict, info: dict, made: dict[str, str]) -> tuple[str, dict[str, str]]:
    by = lambda s: [r for r in rows if r.section == s]  # noqa: E731
    n_pass = sum(r.status == "PASS" for r in rows)
    n_fail = sum(r.status == "FAIL" for r in rows)
    clock_words = ("CPU time of the benchmark process (all its threads), min over interleaved repeats"
                   if CLOCK == "cpu" else "wall-clock time, min over interleaved repeats")
    pre = f"""# Benchmarks

`make bench` (= `.venv/bin/python benchmarks/run_all.py`) measures everything below in one run and
rewrites this file's own sections; the Transfer, Search and Evaluation sections belong to their
benchmarks, and "How the numbers are measured" (method, targets, spread) is written by hand: both are
kept as they are. Last run: {info['date']}, {info['seconds']:.0f} s, on
{info['machine']['cpu']} ({info['machine']['cores']} cores; details under Machine), load average
{info['load_before']} before and {info['load_after']} after (1, 5, 15 min).

Every figure with a target is a **ratio of two things measured side by side in one process**; the
primary clock of this run is the **{clock_words}**, the other clock's ratio is shown next to it.

{n_pass} pass, {n_fail} fail, {sum(r.status == 'n/a' for r in rows)} n/a.

{table(rows)}

{flips(rows)}
"""
    m = info["machine"]
    mine = {"Machine": f"""## Machine

| | |
|---|---|
| CPU | {m['cpu']} ({m['cpu_flags']}; torch CPU capability {m['cpu_capability']}) |
| cores | {m['cores']} (os.cpu_count), {m['memory_gib']} GiB memory |
| torch | {m['torch']}, {m['torch_threads']} intra-op threads, {m['interop_threads']} inter-op threads |
| OpenMP | OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(unset)')} (set by robust_transfer on import) |
| GPU | {m['cuda']} |
| load average | before {info['load_before']}; after {info['load_after']}; per stage: {', '.join(f'{k} {v}' for k, v in info['load_stages'].items())} |
| clock | {CLOCK} (see above) |
| duration | {info['seconds']:.0f} s; per stage: {', '.join(f'{k} {v:.0f} s' for k, v in info['stage_seconds'].items())} |
"""}
    t = raw.get("train", {})
    if t:
        mf = t["mfu"]
        cfg_lines = "\n".join(
            f"| {c['arch']} | {c['batch']} | {c['config']} | {c['gflops']:.1f} | {c['mfu']:.2f} | {c['mfu_alt']:.2f} | "
            f"{c['img_s_wall']:.0f} | {c['times']} |" for c in mf["configs"])
        peaks = "; ".join(f"{a}: " + ", ".join(f"{k} {v:.1f}" for k, v in p.items()) for a, p in mf["peak"].items())
        bd = "; ".join(f"{a}: conv {b['conv']:.0%}, matmul {b['matmul']:.0%}, other {b['other']:.0%}"
                       for a, b in mf["breakdown"].items())
        fr = t["free"]
        wp = t["wait_policy"]
        wp_ratio = min(r["wall"] for r in wp["default"]) / min(r["wall"] for r in wp["PASSIVE"])
        wp_cpu = min(r["cpu"] for r in wp["default"]) / min(r["cpu"] for r in wp["PASSIVE"])
        wp_text = "; ".join(f"{p}: " + ", ".join(f"{r['wall']:.3f} s wall / {r['cpu']:.3f} s CPU" for r in rs)
                            for p, rs in wp.items())
        fmt_text = "; ".join(
            f"{a}: " + ", ".join(f"at {th} thread(s) NCHW ÷ NHWC = {v:.2f} ({_faster(v)})" for th, v in sp.items())
            for a, sp in mf["nhwc_speedup"].items())
        thr = {c["config"]: c for c in mf["configs"] if c["arch"] == "small-cnn"}
        thr_text = ", ".join(f"{lay}: 1 thread {thr[f'{lay}/1t']['img_s_wall']:.0f} img/s vs {th} threads "
                             f"{thr[f'{lay}/{th}t']['img_s_wall']:.0f} img/s wall"
                             for lay in ("NCHW", "NHWC") for th in [m["torch_threads"]]
                             if f"{lay}/1t" in thr and f"{lay}/{th}t" in thr and th != 1)
        mine["Training"] = f"""## Training

MFU per configuration, all interleaved (GFLOP/s and MFU by the primary clock; "other clock" is the MFU
by the other one). GFLOP/image: {', '.join(f'{a} {g:.3f}' for a, g in mf['gflop_per_image'].items())};
fp32 matmul peak (GFLOP/s by clock/threads): {peaks}.

| arch | batch | layout/threads | GFLOP/s | MFU | MFU (other clock) | img/s (wall) | repeats |
|---|---|---|---|---|---|---|---|
{cfg_lines}

- **Memory format** ({CLOCK} time): {fmt_text}.
- **OpenMP wait policy**, a small-cnn step, default ÷ OMP_WAIT_POLICY=PASSIVE: **{wp_ratio:.2f}×** wall,
  {wp_cpu:.2f}× CPU ({wp_text}).
- **Threads** (passive waiting), small-cnn: {thr_text or 'not measured'}.
- **Where a step's time goes** (profiler, self time, best configuration): {bd}.
- **Free training** ({fr['arch']}, batch {fr['batch']}, replay {fr['replay']}; one timing = {fr['replay']} updates):
  natural {fr['natural']}; free {fr['free']}.

{misses(by('Training'))}"""
    a = raw.get("attacks", {})
    if a:
        p, mdl = a["pgd"], a["model"]
        arms = "\n".join(f"| {k} | {p[k]} |" for k in ("bare", "bare_folded", "plain", "ee", "art") if k in p)
        arms += "".join(f"\n| {k} (model as loaded, NCHW) | {v} |" for k, v in a.get("pgd_as_loaded", {}).items())
        mine["Attacks"] = f"""## Attacks

Model: {mdl.get('source')} — {', '.join(f'{k}={v}' for k, v in mdl.items() if k not in ('source',) and v is not None)};
attacked in channels_last (the library's training format). {p['n']} seeded cifar10-jpeg test images,
ε = 8/255, step 2/255, 20 steps, one random start, CE loss. Accuracy: clean {f3(p['clean_acc'])},
PGD-20 plain {f3(p['pgd20_acc_plain'])}, PGD-20 with early exit {f3(p['pgd20_acc_early_exit'])} (asserted ≤ plain),
ART's PGD-20 {f3(p.get('pgd20_acc_art'))} (ART keeps the last iterate, ours the first that fools the model).
Images pushed through the model: plain {p['forward_images_plain']}, early exit {p['forward_images_ee']}.

| arm | seconds per repeat |
|---|---|
{arms}

`bare`, `bare_folded`: the floors defined in the method section.

{misses(by('Attacks'))}"""
    d = raw.get("data", {})
    if d:
        lo = d["loader"]
        cache = d.get("cache")
        cache_text = (f"Decode-once cache ({cache['spec']}, {'+'.join(cache['splits'])}): first load "
                      f"{cache['first_wall_s']:.1f} s wall / {cache['first_cpu_s']:.1f} s CPU (archive hash, JPEG decode, "
                      f"cache write); later loads {', '.join(f'{x:.2f}' for x in cache['later_wall_s'])} s wall / "
                      f"{', '.join(f'{x:.2f}' for x in cache['later_cpu_s'])} s CPU.") if cache else \
            "Decode-once cache: not measured in this run."
        mine["Data"] = f"""## Data

BatchLoader (shuffle, pad-4 crop + flip on the device, float conversion, the channels_last copy the
training loop makes), {lo['loader_batches']} batches of {lo['batch']} per timing, against one small-cnn training
step of the same batch: loader {lo['loader']}; training {lo['train']}
({lo['loader_img_s_wall']:,.0f} vs {lo['train_img_s_wall']:,.0f} images/s wall).

{cache_text}

{misses(by('Data'))}"""
    mem = raw.get("memory", {})
    if mem:
        lines = []
        for k, s in mem.items():
            if not isinstance(s, dict) or not s.get("peak_mib"):
                continue
            lines.append(f"| {k} | {s['target']} | {s['per_class']} | {s['start_rss_mib']:,.0f} | "
                         + ", ".join(f"{p:,.0f}" for p in s["peak_mib"]) + " | "
                         + ", ".join(f"{p:,.0f}" for p in s["rss_mib"]) + f" | {s['seconds'][-1]:.0f} |")
        plot = f"\n![peak RSS vs trials]({made['memory']})\n" if "memory" in made else ""
        mine["Memory"] = f"""## Memory

Peak resident memory of a search's trials run one after another in one process
(`benchmarks/bench_memory.py`; the method section says what each series runs). The row passes if
the peak after 8 trials is within {int(round((__import__('bench_memory').BOUND - 1) * 100))}% of the peak after 1.

| search | target | per_class | RSS before (MiB) | peak RSS after 1, 2, 4, 8 trials (MiB) | current RSS (MiB) | seconds |
|---|---|---|---|---|---|---|
{chr(10).join(lines)}
{plot}
{misses(by('Memory'))}"""
    sc = ["## Scaling", "", "How cost grows with work (one run each, this run's load):", ""]
    if "pgd" in made:
        s = a["pgd_scaling"]
        sc += [f"![PGD time vs steps]({made['pgd']})", "",
               f"PGD on {s['n']} images ({s['clock']} s): " + ", ".join(
                   f"{k} steps {x:.2f} / {y:.2f}" for k, x, y in zip(s["steps"], s["plain_s"], s["ee_s"]))
               + " (plain / early exit).", ""]
    if "train" in made:
        s = t["train_scaling"]
        sc += [f"![training time vs batches]({made['train']})", "",
               f"{s['arch']} natural training, batch {s['batch']} ({s['clock']} s): " + ", ".join(
                   f"{k} batch{'es' if k > 1 else ''} {x:.2f}" for k, x in zip(s["counts"], s["seconds"])) + ".", ""]
    if "transfer" in made:
        s = raw["transfer"]
        sc += [f"![transfer time vs per_class]({made['transfer']})", "",
               f"50-epoch linear head on {s['target']} (wall s): feature cache " + ", ".join(
                   f"N={k} {v:.2f}" for k, v in sorted(s["cached_s"].items())) + "; extractor every epoch " + ", ".join(
                   f"N={k} {v:.2f}" for k, v in sorted(s["uncached_s"].items())) + ".", ""]
    mine["Scaling"] = "\n".join(sc)
    g = raw.get("gpu", {})
    mine["GPU"] = f"""## GPU

`benchmarks/gpu.py` (run by `make bench`; alone: `python benchmarks/gpu.py`; what it measures: the
method section). This run's output:

```
{g.get('output', '(not run)')}
```
"""
    return pre, mine
