"""Mask-schedule sweep for the emoji model: render the same prompts with the same seeds
under each schedule with tessera, then score every schedule with the classifier FID
(fid.py) and classifier agreement.

Prompts: --prompts emoji names (base emoji, no skin-tone variants) drawn with a fixed seed
from tools/train/data/captions.json, a fraction --heldout-frac of them from the held-out
emoji, the rest from training emoji. Prompt i is rendered with seed (--seed * 10000 + i)
and --batch --per-prompt, one tessera process per prompt and schedule.

Metrics per schedule (all in the classifier's 128-d feature space):
  fid_all      generated images vs all 7,572 real images (train + held-out, both styles)
  fid_all_std  spread of fid_all: std over --bootstrap resamples of the prompts
  fid_prompt   generated images vs the real images of the prompted emoji (2 per prompt:
               Noto + Twemoji), i.e. a prompt-matched FID
  agreement    fraction of generated images classified into the prompted emoji's
               subcategory (also split into train / held-out prompts)
  render_s     summed wall time of the tessera processes (model loading included)
A reference row scores the real images of the prompted emoji the same way (its fid_all is
the floor this sample size can reach; its agreement is the classifier's accuracy on them).

Outputs (--out, default tools/eval/runs/sweep.json):
  sweep.json                         all metrics + the Markdown table
  sweep/config.json                  model, sampler, steps, guidance, prompts with seeds
  sweep/<schedule>/pNNN-K.png        images; sweep/<schedule>/pNNN.json marks prompt NNN done
  sweep/<schedule>/manifest.json     file -> caption, label (for fid.py's command line)
(the image folder is --out without its .json suffix)
Resumable: prompts whose marker exists are skipped, so a killed sweep continues where it
stopped. Changing the model, sampler, steps, guidance or prompts needs a new --out.

Usage (see README.md):
  nice -n 10 env OMP_NUM_THREADS=1 python tools/eval/sweep.py --model assets/models/emoji \
      --tessera target/release/tessera
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(HERE))
from classifier import CLASSIFIER_PT, RUNS_DIR, load_classifier  # noqa: E402
from fid import DEFAULT_EPS, extract, frechet_distance, load_pngs, real_features, stats  # noqa: E402

ALL_SCHEDULES = ["cosine", "linear", "square", "cubic", "sqrt", "log", "exp"]
# Settings that must match between runs sharing an --out folder (images are reused).
RENDER_KEYS = ("model", "sampler", "steps", "guidance", "choice_temperature", "per_prompt", "prompts")


# --------------------------------------------------------------------------------------
# Prompts
# --------------------------------------------------------------------------------------


def pick_prompts(records: list[dict], n: int, heldout_frac: float, seed: int, label_field: str) -> list[dict]:
    """n base emoji (one per emoji group, the record without skin tone), round(n *
    heldout_frac) of them held out. Deterministic for a given seed and dataset."""
    base: dict[str, dict] = {}
    for r in records:
        if r["unified"] == r["group"]:
            base.setdefault(r["group"], r)
    groups_ho = sorted(g for g, r in base.items() if r["heldout"])
    groups_tr = sorted(g for g, r in base.items() if not r["heldout"])
    n_ho = min(len(groups_ho), round(n * heldout_frac))
    n_tr = min(len(groups_tr), n - n_ho)
    rng = random.Random(seed)
    chosen = rng.sample(groups_tr, n_tr) + rng.sample(groups_ho, n_ho)
    return [
        {
            "index": i,
            "caption": base[g]["caption"],
            "group": g,
            "heldout": bool(base[g]["heldout"]),
            "label": base[g][label_field],
            "seed": seed * 10000 + i,
        }
        for i, g in enumerate(chosen)
    ]


# --------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------


def schedule_dirname(schedule: str) -> str:
    return schedule.replace(":", "-")  # pow:2.5 -> pow-2.5


def image_names(p: dict, per_prompt: int) -> list[str]:
    return [f"p{p['index']:03d}-{k + 1}.png" for k in range(per_prompt)]


def render_prompt(args, cfg: dict, schedule: str, p: dict, sdir: Path) -> float:
    """Renders one prompt (all --per-prompt images) into sdir; returns wall seconds.
    Writes into sdir/.partial first and moves the files when tessera succeeded, then
    writes the marker pNNN.json (the marker is what resuming looks at)."""
    partial = sdir / ".partial"
    partial.mkdir(parents=True, exist_ok=True)
    stem = partial / f"p{p['index']:03d}.png"
    cmd = [
        str(args.tessera), "--render", str(stem), "--model", str(cfg["model"]),
        "--prompt", p["caption"], "--seed", str(p["seed"]), "--steps", str(cfg["steps"]),
        "--schedule", schedule, "--sampler", cfg["sampler"], "--batch", str(cfg["per_prompt"]),
    ]  # fmt: skip
    if cfg["guidance"] is not None:
        cmd += ["--guidance", str(cfg["guidance"])]
    if cfg.get("choice_temperature") is not None:
        cmd += ["--choice-temperature", cfg["choice_temperature"]]
    env = dict(os.environ)
    env.setdefault("WGPU_BACKEND", "vulkan")
    env.setdefault("XDG_RUNTIME_DIR", "/tmp")
    t0 = time.time()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=args.timeout)
    secs = time.time() - t0
    if proc.returncode != 0:
        sys.exit(f"error: tessera failed ({proc.returncode}) on {p['caption']!r} / {schedule}:\n"
                 f"{' '.join(cmd)}\n{proc.stderr[-3000:]}")
    # tessera writes OUT.png for --batch 1 and OUT-1.png ... OUT-N.png otherwise.
    if cfg["per_prompt"] == 1:
        produced = [stem]
    else:
        produced = [stem.with_name(f"{stem.stem}-{k + 1}.png") for k in range(cfg["per_prompt"])]
    for src, name in zip(produced, image_names(p, cfg["per_prompt"])):
        if not src.exists():
            sys.exit(f"error: tessera did not write {src}\n{' '.join(cmd)}\n{proc.stderr[-3000:]}")
        os.replace(src, sdir / name)
    marker = {"caption": p["caption"], "seed": p["seed"], "seconds": round(secs, 3), "command": cmd}
    (sdir / f"p{p['index']:03d}.json").write_text(json.dumps(marker, indent=1) + "\n", encoding="utf-8")
    return secs


def render_schedule(args, cfg: dict, schedule: str) -> dict:
    """Renders whatever is missing for one schedule; returns timing info."""
    sdir = args.images / schedule_dirname(schedule)
    sdir.mkdir(parents=True, exist_ok=True)
    prompts = cfg["prompts"]
    todo = [p for p in prompts if not (sdir / f"p{p['index']:03d}.json").exists()]
    if todo and not args.skip_render:
        print(f"[{schedule}] rendering {len(todo)} of {len(prompts)} prompts "
              f"x {cfg['per_prompt']} images", flush=True)
    t_start = time.time()
    for n, p in enumerate(todo if not args.skip_render else []):
        secs = render_prompt(args, cfg, schedule, p, sdir)
        done = n + 1
        eta = (time.time() - t_start) / done * (len(todo) - done)
        print(f"[{schedule}] {done}/{len(todo)} p{p['index']:03d} {p['caption']!r}: {secs:.1f}s "
              f"(eta {eta / 60:.1f} min)", flush=True)
    # Timing and manifest from the markers, so resumed runs count earlier renders too.
    done_prompts, seconds = [], 0.0
    for p in prompts:
        mpath = sdir / f"p{p['index']:03d}.json"
        if mpath.exists():
            done_prompts.append(p)
            seconds += json.loads(mpath.read_text(encoding="utf-8"))["seconds"]
    manifest = [
        {"file": name, "caption": p["caption"], "label": p["label"], "prompt": p["index"]}
        for p in done_prompts
        for name in image_names(p, cfg["per_prompt"])
    ]
    (sdir / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    return {"dir": sdir, "prompts": done_prompts, "manifest": manifest, "render_s": seconds}


# --------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------


def score(feats, logits, prompt_of_image, prompts, labels, real_all, real_prompt, n_boot, rng, eps) -> dict:
    """Metrics of one image set. prompt_of_image[i] is the prompt index of image i."""
    label_idx = {label: i for i, label in enumerate(labels)}
    by_index = {p["index"]: p for p in prompts}
    expected = np.array([label_idx[by_index[j]["label"]] for j in prompt_of_image])
    held = np.array([by_index[j]["heldout"] for j in prompt_of_image])
    hit = logits.argmax(1) == expected
    fid_all, eps_all = frechet_distance(stats(feats), real_all, eps)
    out = {
        "images": int(len(feats)),
        "fid_all": fid_all,
        "eps_added": eps_all,
        "agreement": float(hit.mean()),
        "agreement_train": float(hit[~held].mean()) if (~held).any() else None,
        "agreement_heldout": float(hit[held].mean()) if held.any() else None,
    }
    if real_prompt is not None:
        out["fid_prompt"], eps_p = frechet_distance(stats(feats), real_prompt, eps)
        out["eps_added"] = out["eps_added"] or eps_p
    # Bootstrap over prompts (all images of a drawn prompt go in together).
    if n_boot > 0:
        pidx = np.array(prompt_of_image)
        uniq = np.unique(pidx)
        rows = {j: np.flatnonzero(pidx == j) for j in uniq}
        vals = []
        for _ in range(n_boot):
            pick = np.concatenate([rows[j] for j in rng.choice(uniq, size=len(uniq), replace=True)])
            vals.append(frechet_distance(stats(feats[pick]), real_all, eps)[0])
        out["fid_all_std"] = float(np.std(vals))
    return out


def fmt(v, digits=2):
    if v is None:
        return "—"
    return f"{v:.{digits}f}"


def markdown_table(rows: list[dict], cfg: dict) -> str:
    head = (
        "| schedule | images | FID vs all real (± boot. std) | FID vs prompt emoji | agreement | "
        "agree. train / held-out | render s | s / image |\n"
        "|---|---|---|---|---|---|---|---|\n"
    )
    lines = []
    for r in rows:
        per_img = r["render_s"] / r["images"] if r.get("render_s") and r["images"] else None
        lines.append(
            f"| {r['name']} | {r['images']} | {fmt(r['fid_all'])} ± {fmt(r.get('fid_all_std'))} | "
            f"{fmt(r.get('fid_prompt'))} | {fmt(r['agreement'], 3)} | "
            f"{fmt(r['agreement_train'], 3)} / {fmt(r['agreement_heldout'], 3)} | "
            f"{fmt(r.get('render_s'), 0)} | {fmt(per_img, 1)} |"
        )
    g = "the model's default" if cfg["guidance"] is None else cfg["guidance"]
    t = cfg.get("choice_temperature") or "the model's default"
    title = (f"{cfg['sampler']} sampler, {cfg['steps']} steps, guidance {g}, choice temperature {t}, "
             f"{len(cfg['prompts'])} prompts x {cfg['per_prompt']} images\n\n")
    return title + head + "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=REPO / "assets/models/emoji")
    ap.add_argument("--tessera", type=Path, default=REPO / "target/release/tessera")
    ap.add_argument("--prompts", type=int, default=32, help="number of prompts")
    ap.add_argument("--per-prompt", type=int, default=2, help="images per prompt (tessera --batch)")
    ap.add_argument("--heldout-frac", type=float, default=0.25, help="share of prompts from held-out emoji")
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--schedules", default=",".join(ALL_SCHEDULES), help="comma-separated")
    ap.add_argument("--sampler", default="amused")
    ap.add_argument("--guidance", type=float, default=None,
                    help="default: the model's (its tessera.json, else 10)")
    ap.add_argument("--choice-temperature", default=None, metavar="T0[:T1]",
                    help="tessera --choice-temperature (default: the model's)")
    ap.add_argument("--seed", type=int, default=0, help="prompt choice and render seeds")
    ap.add_argument("--out", type=Path, default=RUNS_DIR / "sweep.json",
                    help="result JSON; images go to the folder of the same name without .json")
    ap.add_argument("--classifier", type=Path, default=CLASSIFIER_PT)
    ap.add_argument("--bootstrap", type=int, default=50, help="bootstrap resamples for fid_all_std (0: off)")
    ap.add_argument("--eps", type=float, default=DEFAULT_EPS)
    ap.add_argument("--timeout", type=float, default=900, help="seconds per tessera process")
    ap.add_argument("--skip-render", action="store_true", help="only score what is already rendered")
    args = ap.parse_args()
    if args.out.suffix != ".json":
        args.out = args.out.with_name(args.out.name + ".json")
    args.images = args.out.with_suffix("")
    torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS", "1"))))

    schedules = [s.strip() for s in args.schedules.split(",") if s.strip()]
    if not args.skip_render and not args.tessera.exists():
        sys.exit(f"error: tessera binary {args.tessera} not found (use --tessera)")
    if not (args.model / "model_index.json").exists():
        sys.exit(f"error: {args.model} is not a model folder (no model_index.json)")

    model, labels, meta = load_classifier(args.classifier)
    real_feats, real_logits, records, _ = real_features(model, args.classifier)
    prompts = pick_prompts(records, args.prompts, args.heldout_frac, args.seed, meta["label_field"])

    cfg = {
        "model": str(args.model.resolve()),
        "sampler": args.sampler,
        "steps": args.steps,
        "guidance": args.guidance,
        "choice_temperature": args.choice_temperature,
        "per_prompt": args.per_prompt,
        "prompts": prompts,
    }
    args.images.mkdir(parents=True, exist_ok=True)
    cfg_path = args.images / "config.json"
    if cfg_path.exists():
        old = json.loads(cfg_path.read_text(encoding="utf-8"))
        changed = [k for k in RENDER_KEYS if old.get(k) != cfg[k]]
        if changed:
            sys.exit(f"error: {args.images} was rendered with other settings ({', '.join(changed)}); "
                     "use a new --out or delete the folder")
    cfg_path.write_text(json.dumps(cfg, indent=1) + "\n", encoding="utf-8")
    n_ho = sum(p["heldout"] for p in prompts)
    print(f"{len(prompts)} prompts ({n_ho} held-out emoji), {args.per_prompt} images each, "
          f"schedules {', '.join(schedules)}; images in {args.images}", flush=True)

    # Reference statistics: all real images, and the real images of the prompted emoji.
    real_all = stats(real_feats)
    group_of = {p["group"]: p["index"] for p in prompts}
    ref_rows = [i for i, r in enumerate(records) if r["unified"] == r["group"] and r["group"] in group_of]
    ref_prompt_of = [group_of[records[i]["group"]] for i in ref_rows]
    real_prompt = stats(real_feats[ref_rows]) if len(ref_rows) >= 2 else None

    rows = []
    # Each score() gets a fresh generator, so a row's bootstrap std does not depend on
    # which other schedules were scored in the same run.
    ref = score(real_feats[ref_rows], real_logits[ref_rows], ref_prompt_of, prompts, labels,
                real_all, None, args.bootstrap, np.random.default_rng(args.seed), args.eps)
    ref.update(name="real images of the prompt emoji (reference)", schedule=None, render_s=None)

    for schedule in schedules:
        info = render_schedule(args, cfg, schedule)
        if len(info["manifest"]) < 2:
            print(f"[{schedule}] fewer than 2 images rendered; not scored", flush=True)
            continue
        images = load_pngs([info["dir"] / m["file"] for m in info["manifest"]])
        feats, logits = extract(model, images)
        row = score(feats, logits, [m["prompt"] for m in info["manifest"]], prompts, labels,
                    real_all, real_prompt, args.bootstrap, np.random.default_rng(args.seed), args.eps)
        row.update(name=schedule, schedule=schedule, render_s=round(info["render_s"], 1),
                   complete=len(info["prompts"]) == len(prompts))
        rows.append(row)
        print(f"[{schedule}] FID {row['fid_all']:.2f}, agreement {row['agreement']:.3f}, "
              f"{row['images']} images, render {row['render_s']:.0f}s", flush=True)

    table = markdown_table(rows + [ref], cfg)
    eps_note = any(r["eps_added"] for r in rows + [ref])
    notes = [
        "FID in the 128-d feature space of tools/eval/classifier.py; reference set: all 7,572 "
        "real images (both styles, train + held-out).",
        "Small-sample FID is biased upwards and noisy: compare schedules with each other (same "
        "prompts, seeds and sample size), not with published FIDs.",
    ]
    if eps_note:
        notes.append(f"Covariances were singular (fewer images than feature dimensions + 1): "
                     f"eps*I with eps={args.eps:g} was added before the matrix square root.")
    incomplete = [r["name"] for r in rows if not r["complete"]]
    if incomplete:
        notes.append(f"Incomplete (not all prompts rendered): {', '.join(incomplete)}.")
    table += "\n" + "\n".join(f"- {n}" for n in notes) + "\n"

    result = {
        "config": {**cfg, "tessera": str(args.tessera), "schedules": schedules, "seed": args.seed,
                   "heldout_frac": args.heldout_frac, "bootstrap": args.bootstrap, "eps": args.eps},
        "classifier": {"path": str(args.classifier), "label_field": meta["label_field"],
                       "n_labels": len(labels), "feat_dim": meta["feat_dim"]},
        "reference_set": "all real images (7,572: train + held-out, Noto + Twemoji)",
        "schedules": rows,
        "reference": ref,
        "table_markdown": table,
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print()
    print(table)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
