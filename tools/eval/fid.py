"""Fréchet distance in the feature space of the emoji classifier (classifier.py), plus
classifier agreement. Library (imported by sweep.py) and command line tool.

Features: the 128-d globally pooled activations before the classifier's linear layer.
The distance between two image sets A and B is the Fréchet (2-Wasserstein) distance of
Gaussians fitted to their features:

    FD = |mu_A - mu_B|^2 + tr(S_A) + tr(S_B) - 2 tr( (S_A^1/2 S_B S_A^1/2)^1/2 )

computed in float64 with symmetric eigen decompositions only (no scipy): S_A^1/2 from the
eigen decomposition of S_A, then the trace term from the eigenvalues of the symmetric PSD
matrix S_A^1/2 S_B S_A^1/2 (they equal those of S_A S_B). With fewer images than
feature dimensions + 1 a covariance is singular; then eps*I (default 1e-6) is added to
both covariances and the result says so (`eps_added`). That changes FD by about
2*d*eps, far below the sampling noise.

Classifier agreement: the fraction of images whose predicted subcategory equals the
subcategory of the emoji whose caption was the prompt.

Command line:
  python tools/eval/fid.py GEN_DIR [REF]
    GEN_DIR  folder of PNGs (any size; resized to 64x64, RGBA composited on white)
    REF      another folder, or `real` (default: all 7,572 dataset images),
             `real-train` or `real-heldout`
  Agreement is reported when GEN_DIR holds a manifest.json (written by sweep.py: a list of
  {"file": ..., "caption": ...}) or with --caption TEXT (every image shows that caption).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from classifier import CLASSIFIER_PT, RUNS_DIR, EmojiNet, load_classifier, load_emoji_data  # noqa: E402

REAL_CACHE = RUNS_DIR / "real_features.npz"
DEFAULT_EPS = 1e-6
IMAGE_SIZE = 64


# --------------------------------------------------------------------------------------
# Images and features
# --------------------------------------------------------------------------------------


def load_png(path: Path) -> np.ndarray:
    """uint8 [64,64,3]; RGBA is composited on white and other sizes resized (Lanczos),
    the way tools/train/data.py prepared the real images."""
    im = Image.open(path)
    if im.mode != "RGB":
        rgba = np.asarray(im.convert("RGBA"), dtype=np.float32) / 255.0
        rgb = rgba[..., :3] * rgba[..., 3:4] + (1.0 - rgba[..., 3:4])
        im = Image.fromarray(np.clip(np.round(rgb * 255.0), 0, 255).astype(np.uint8))
    if im.size != (IMAGE_SIZE, IMAGE_SIZE):
        im = im.resize((IMAGE_SIZE, IMAGE_SIZE), Image.LANCZOS)
    return np.asarray(im, dtype=np.uint8)


def load_pngs(paths: list[Path]) -> np.ndarray:
    if not paths:
        return np.zeros((0, IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8)
    return np.stack([load_png(p) for p in paths])


def list_pngs(folder: Path) -> list[Path]:
    return sorted(p for p in Path(folder).glob("*.png") if p.is_file())


@torch.no_grad()
def extract(model: EmojiNet, images: np.ndarray, batch: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Features float64 [N, d] and logits float32 [N, C] for uint8 NHWC images."""
    model.eval()
    feats, logits = [], []
    for i in range(0, len(images), batch):
        x = EmojiNet.normalize(torch.from_numpy(np.ascontiguousarray(images[i : i + batch])))
        f = model.features(x)
        feats.append(f.double().numpy())
        logits.append(model.head(f).numpy())
    if not feats:
        return np.zeros((0, model.feat_dim)), np.zeros((0, model.head.out_features), np.float32)
    return np.concatenate(feats), np.concatenate(logits)


def file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def real_features(model: EmojiNet, classifier_path: Path = CLASSIFIER_PT, cache: Path = REAL_CACHE):
    """Features and logits of all real dataset images, cached on disk per classifier
    (keyed by the classifier file's SHA-256). Returns (feats, logits, records, heldout)."""
    images, records, heldout = load_emoji_data()
    key = file_sha256(classifier_path)
    if cache.exists():
        z = np.load(cache)
        if str(z["key"]) == key and len(z["feats"]) == len(images):
            return z["feats"], z["logits"], records, heldout
    feats, logits = extract(model, images)
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_name(cache.stem + ".tmp.npz")
    np.savez(tmp, key=key, feats=feats, logits=logits)
    os.replace(tmp, cache)
    return feats, logits, records, heldout


# --------------------------------------------------------------------------------------
# Fréchet distance
# --------------------------------------------------------------------------------------


@dataclass
class Stats:
    mu: np.ndarray
    sigma: np.ndarray
    n: int


def stats(feats: np.ndarray) -> Stats:
    feats = np.asarray(feats, dtype=np.float64)
    if len(feats) < 2:
        raise ValueError(f"need at least 2 feature vectors for a covariance, got {len(feats)}")
    if feats.ndim != 2:
        raise ValueError(f"features must be [N, d], got shape {feats.shape}")
    sigma = np.atleast_2d(np.cov(feats, rowvar=False))  # np.cov gives a scalar when d == 1
    return Stats(feats.mean(0), sigma, len(feats))


def _psd_sqrt(m: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((m + m.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def _is_singular(s: Stats) -> bool:
    d = len(s.mu)
    if s.n - 1 < d:  # rank(S) <= n - 1 < d
        return True
    w = np.linalg.eigvalsh(s.sigma)
    return bool(w[0] <= 1e-12 * max(w[-1], 1e-300))


def frechet_distance(a: Stats, b: Stats, eps: float = DEFAULT_EPS) -> tuple[float, bool]:
    """Returns (FD, eps_added). eps*I is added to both covariances when either is singular."""
    sa, sb = a.sigma, b.sigma
    eps_added = _is_singular(a) or _is_singular(b)
    if eps_added:
        eye = np.eye(len(a.mu))
        sa, sb = sa + eps * eye, sb + eps * eye
    root_a = _psd_sqrt(sa)
    inner = root_a @ sb @ root_a
    tr_cross = float(np.sqrt(np.clip(np.linalg.eigvalsh((inner + inner.T) / 2), 0, None)).sum())
    diff = a.mu - b.mu
    fd = float(diff @ diff + np.trace(sa) + np.trace(sb) - 2.0 * tr_cross)
    return max(fd, 0.0), eps_added


# --------------------------------------------------------------------------------------
# Labels and agreement
# --------------------------------------------------------------------------------------


def caption_labels(records: list[dict], label_field: str) -> dict[str, str]:
    """caption -> label. A caption shared by several emoji keeps the first one's label."""
    out: dict[str, str] = {}
    for r in records:
        out.setdefault(r["caption"], r[label_field])
    return out


def agreement(logits: np.ndarray, expected: list[str], labels: list[str]) -> float:
    """Fraction of images whose argmax label equals the expected label."""
    if len(expected) == 0:
        return float("nan")
    pred = np.asarray(logits).argmax(1)
    return float(np.mean([labels[p] == e for p, e in zip(pred, expected)]))


# --------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("gen", type=Path, help="folder of generated PNGs")
    ap.add_argument("ref", nargs="?", default="real", help="folder, or real | real-train | real-heldout")
    ap.add_argument("--classifier", type=Path, default=CLASSIFIER_PT)
    ap.add_argument("--caption", help="every image in GEN shows this caption (for agreement)")
    ap.add_argument("--eps", type=float, default=DEFAULT_EPS)
    ap.add_argument("--json", type=Path, help="also write the result here")
    args = ap.parse_args()
    torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS", "1"))))

    model, labels, meta = load_classifier(args.classifier)
    manifest_path = args.gen / "manifest.json"
    captions: list[str] | None = None
    manifest_labels: list[str | None] = []
    if manifest_path.exists():
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        gen_paths = [args.gen / m["file"] for m in manifest]
        captions = [m["caption"] for m in manifest]
        manifest_labels = [m.get("label") for m in manifest]
    else:
        gen_paths = list_pngs(args.gen)
        if args.caption is not None:
            captions = [args.caption] * len(gen_paths)
    if len(gen_paths) < 2:
        sys.exit(f"error: {args.gen} holds {len(gen_paths)} PNGs; need at least 2")
    gen_feats, gen_logits = extract(model, load_pngs(gen_paths))

    result: dict = {"gen": str(args.gen), "ref": args.ref, "n_gen": len(gen_paths)}
    records = None
    if args.ref in ("real", "real-train", "real-heldout"):
        feats, _, records, heldout = real_features(model, args.classifier)
        sel = {"real": np.ones(len(feats), bool), "real-train": ~heldout, "real-heldout": heldout}[args.ref]
        ref_feats = feats[sel]
    else:
        ref_paths = list_pngs(Path(args.ref))
        ref_feats, _ = extract(model, load_pngs(ref_paths))
    fd, eps_added = frechet_distance(stats(gen_feats), stats(ref_feats), args.eps)
    result.update(n_ref=len(ref_feats), fid=fd, eps_added=eps_added, feat_dim=int(gen_feats.shape[1]))

    if captions is not None:
        if records is None:
            _, records, _ = load_emoji_data()
        by_caption = caption_labels(records, meta["label_field"])
        # A label stored in the manifest (sweep.py) wins over the caption lookup.
        expected = [
            (manifest_labels[i] if i < len(manifest_labels) and manifest_labels[i] else by_caption.get(c))
            for i, c in enumerate(captions)
        ]
        known = [i for i, e in enumerate(expected) if e is not None]
        result["agreement"] = agreement(gen_logits[known], [expected[i] for i in known], labels)
        result["agreement_images"] = len(known)

    note = f" (eps*I added: a covariance is singular, e.g. n <= d = {result['feat_dim']})" if eps_added else ""
    print(f"FID {fd:.3f}: {len(gen_paths)} images vs {len(ref_feats)} ({args.ref}){note}")
    if "agreement" in result:
        print(f"classifier agreement {result['agreement']:.3f} over {result['agreement_images']} images")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
