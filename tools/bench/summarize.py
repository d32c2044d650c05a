"""Markdown tables from `tessera bench --json` lines and `reference.py` lines (run_device.sh).

    python tools/bench/summarize.py bench-out/tessera.jsonl bench-out/reference.jsonl

Prints the adapter, the kernel table, and one end-to-end table with, for each model, tessera
and diffusers fp32/fp16 side by side and the ratio of their totals (diffusers ÷ tessera: above 1
means tessera is faster); tessera's text and step times carry their host share (recording the
commands, the queue's submit calls left out) in brackets. Standard library only.
"""

import json
import sys


def read_lines(path):
    out = []
    try:
        with open(path) as f:
            for line in f:
                line = line.strip()
                if line.startswith("{"):
                    try:
                        out.append(json.loads(line))
                    except json.JSONDecodeError:
                        pass
    except FileNotFoundError:
        pass
    return out


def key(model):
    """Reference runs name the default model by its folder."""
    return "default" if model.rstrip("/").endswith("models/emoji") else model


def fmt(v, digits=1):
    return "–" if v is None else f"{v:.{digits}f}"


def with_host(e, wall, host):
    """A phase's wall time, with its host share (recording the commands) where tessera gave it."""
    return fmt(e[wall]) + ("" if e.get(host) is None else f" (host {fmt(e[host])})")


def main():
    tessera = read_lines(sys.argv[1]) if len(sys.argv) > 1 else []
    reference = read_lines(sys.argv[2]) if len(sys.argv) > 2 else []
    if tessera:
        a = tessera[0].get("adapter", {})
        print(f"Adapter: {a.get('name')} ({a.get('backend')})\n")
    kernels = [k for t in tessera for k in (t.get("kernels") or [])]
    if kernels:
        print("| kernel | ran | shape | dtype | ms | GFLOPS |")
        print("|---|---|---|---|---:|---:|")
        for k in kernels:
            print(f"| {k['name']} | {k.get('kernel', '')} | {k['shape']} | {k['dtype']} | "
                  f"{k['ms']:.3f} | {k['gflops']:.1f} |")
        print()
    # Kernel tuning: the choices the last run held (call shape → strategy), where it was on.
    tuned = next((t["tuning"] for t in reversed(tessera) if (t.get("tuning") or {}).get("on")), None)
    if tuned:
        print(f"Kernel tuning: {len(tuned.get('choices', {}))} choices\n")
        print("| call shape | tuned kernel |")
        print("|---|---|")
        for shape, kernel in sorted(tuned.get("choices", {}).items()):
            print(f"| {shape} | {kernel} |")
        print()
    refs = {}
    for r in reference:
        e = r.get("end_to_end") or {}
        refs.setdefault(key(e.get("model", "")), {})[e.get("dtype")] = e
    print("| model | who | text ms | ms/step | super-res ms/step (steps) | decode ms | total ms | "
          "first run ms (tuning) | dispatches/step | submits/step | peak MiB | diffusers ÷ tessera |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for t in tessera:
        e = t.get("end_to_end")
        if not e:
            continue
        name = e["model"]
        model = "default" if name.rstrip("/").endswith("models/emoji") else name
        # A two-stage model's full run has no diffusers counterpart (diffusers runs the base
        # folder alone): the reference rows go with the same model's `--stages 1` run.
        two_stage = e.get("stages", 1) == 2
        label = model + (" (two stages)" if two_stage else "")
        sr = (f"{fmt(e['super_res_step_ms'])} ({e['super_res_steps']})"
              if e.get("super_res_steps") else "–")
        coop = t.get("cooperative_matrix", t.get("cooperative_matrix_16"))
        width = t.get("cooperative_matrix_subgroup")
        shape = f" {coop}×{coop}, {width}-wide subgroups" if coop and width else ""
        who = "tessera" + ("" if not coop else f" (tensor cores{shape})")
        if t.get("kernel_family") == "Tiled" and not coop:
            who = "tessera (plain WGSL)"
        forced = [f"{k}={t[k]}" for k in ("matmul_strategy", "conv_strategy", "attention_kernel") if t.get(k)]
        if t.get("shader_checks") not in (None, "Bounds"):
            forced.append(f"shader checks {t['shader_checks']}")
        tuning = t.get("tuning") or {}
        if tuning.get("on") is False:
            forced.append("tuning off")
        if forced:
            who += " " + ", ".join(forced)
        first = fmt(e.get("first_run_ms"))
        if e.get("first_run_tune_ms"):
            first += f" ({fmt(e['first_run_tune_ms'])}, {e.get('first_run_tuned_shapes')} shapes)"
        print(f"| {label} | {who} | {with_host(e, 'text_ms', 'text_record_ms')} | "
              f"{with_host(e, 'step_ms', 'step_record_ms')} | {sr} | "
              f"{fmt(e['decode_ms'])} | {fmt(e['total_ms'])} | {first} | "
              f"{fmt(e.get('dispatches_per_step'))} | {fmt(e.get('submits_per_step'))} | "
              f"{fmt(e['peak_bytes'] / 2**20)} | |")
        for dtype in ("float32", "float16"):
            r = None if two_stage else refs.get(model, {}).get(dtype)
            if not r:
                continue
            peak = r.get("peak_bytes")
            ratio = r["total_ms"] / e["total_ms"] if e["total_ms"] else None
            print(f"| {label} | diffusers {dtype} | {fmt(r['text_ms'])} | {fmt(r['step_ms'])} | – | "
                  f"{fmt(r['decode_ms'])} | {fmt(r['total_ms'])} | | | | "
                  f"{fmt(peak / 2**20 if peak else None)} | {fmt(ratio, 2)} |")


if __name__ == "__main__":
    main()
