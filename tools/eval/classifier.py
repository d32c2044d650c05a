"""Train the small emoji classifier whose penultimate layer is the feature space of the
evaluation FID (fid.py, sweep.py).

Label: the emoji.json *subcategory* of each image (99 classes such as `face-smiling`,
`animal-mammal`, `food-fruit`, `country-flag`, `heart`). The 10 top-level categories are too
coarse to give a useful feature space; per-emoji identity (1,911 classes, two images each
plus skin tones) is too fine to learn from one image per style and would not generalise to
the held-out emoji. Every subcategory of a held-out emoji also appears in training.

Training uses the non-held-out images of tools/train/data/emoji64.npz (7,252 images).
Half of them are skin-tone variants of a few hundred people/hand emoji, so batches are drawn
with weights 1/(images of that emoji) by default (--balance group): every emoji counts the
same, as it does for the prompts of sweep.py. Held-out accuracy is measured on the 320
held-out images (90 emoji never seen in training, so this is accuracy on *unseen emoji* of
known subcategories); `*_base_acc` counts only the base image of each emoji (no skin tone).

Writes (git-ignored):
  runs/classifier.pt    state dict + label list + architecture settings
  runs/classifier.json  accuracies, label list, class counts, training settings

Usage:
  nice -n 10 env OMP_NUM_THREADS=1 /work/pyenv/bin/python tools/eval/classifier.py [--epochs 15]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
RUNS_DIR = HERE / "runs"
CLASSIFIER_PT = RUNS_DIR / "classifier.pt"
CLASSIFIER_JSON = RUNS_DIR / "classifier.json"
TRAIN_DIR = HERE.parent / "train"
LABEL_FIELD = "subcategory"


def load_emoji_data():
    """(images uint8 [N,64,64,3], records, heldout bool [N]) via tools/train/common.py."""
    sys.path.insert(0, str(TRAIN_DIR))
    from common import load_dataset  # noqa: E402  (tools/train is not a package)

    return load_dataset()


# --------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------


def conv_bn(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class EmojiNet(nn.Module):
    """~0.46M-parameter CNN for 64x64 RGB input.

    64 -> (stride-2 stem) 32 -> pool 16 -> pool 8 -> pool 4 -> global average pool.
    `features()` returns the 128-d globally pooled activations (the layer before the linear
    classifier): the FID feature space.
    """

    def __init__(self, n_classes: int, width: int = 32, feat_dim: int = 128):
        super().__init__()
        w = width
        self.body = nn.Sequential(
            conv_bn(3, w, stride=2),  # 32x32
            conv_bn(w, w),
            nn.MaxPool2d(2),  # 16x16
            conv_bn(w, 2 * w),
            conv_bn(2 * w, 2 * w),
            nn.MaxPool2d(2),  # 8x8
            conv_bn(2 * w, 4 * w),
            conv_bn(4 * w, 4 * w),
            nn.MaxPool2d(2),  # 4x4
            conv_bn(4 * w, feat_dim),
        )
        self.drop = nn.Dropout(0.2)
        self.head = nn.Linear(feat_dim, n_classes)
        self.feat_dim = feat_dim

    @staticmethod
    def normalize(x_uint8_nhwc: torch.Tensor) -> torch.Tensor:
        """uint8 NHWC in [0,255] -> float NCHW in [-1,1] (white = +1)."""
        return x_uint8_nhwc.permute(0, 3, 1, 2).float().div(127.5).sub(1.0)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """x: float NCHW in [-1,1]. Returns [B, feat_dim]."""
        return self.body(x).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.drop(self.features(x)))


def build_model(meta: dict) -> EmojiNet:
    return EmojiNet(len(meta["labels"]), width=meta["width"], feat_dim=meta["feat_dim"])


def load_classifier(path: Path = CLASSIFIER_PT) -> tuple[EmojiNet, list[str], dict]:
    """Returns (model in eval mode, labels, saved metadata)."""
    if not Path(path).exists():
        raise FileNotFoundError(f"{path} not found: train it first with tools/eval/classifier.py")
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    model = build_model(ckpt["meta"])
    model.load_state_dict(ckpt["state_dict"])
    model.eval()
    return model, ckpt["meta"]["labels"], ckpt["meta"]


# --------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------


def augment(x: torch.Tensor, gen: torch.Generator, shift: int = 4) -> torch.Tensor:
    """Light augmentation on a normalized batch: horizontal flip (p=0.5) and a random
    translation of up to `shift` px, filling with white (+1) like the composited background."""
    b, _, h, w = x.shape
    flip = torch.rand(b, generator=gen) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(3), x)
    padded = F.pad(x, (shift, shift, shift, shift), value=1.0)
    offs = torch.randint(0, 2 * shift + 1, (b, 2), generator=gen)
    out = torch.empty_like(x)
    for i in range(b):
        dy, dx = int(offs[i, 0]), int(offs[i, 1])
        out[i] = padded[i, :, dy : dy + h, dx : dx + w]
    return out


@torch.no_grad()
def predict(model: EmojiNet, images: np.ndarray, batch: int = 256) -> np.ndarray:
    """Logits [N, C] for uint8 NHWC images."""
    model.eval()
    out = []
    for i in range(0, len(images), batch):
        x = EmojiNet.normalize(torch.from_numpy(images[i : i + batch]))
        out.append(model(x))
    return torch.cat(out).numpy()


def topk_acc(logits: np.ndarray, y: np.ndarray, k: int) -> float:
    top = np.argsort(-logits, axis=1)[:, :k]
    return float((top == y[:, None]).any(axis=1).mean())


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--balance", choices=["group", "none"], default="group",
                    help="group: sample each emoji equally often (skin tones share one emoji's weight)")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--weight-decay", type=float, default=5e-4)
    ap.add_argument("--label-smoothing", type=float, default=0.1)
    ap.add_argument("--width", type=int, default=32, help="channels of the first stage (x2, x4 later)")
    ap.add_argument("--feat-dim", type=int, default=128, help="size of the FID feature vector")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=CLASSIFIER_PT)
    args = ap.parse_args()

    torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS", "1"))))
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)

    images, records, heldout = load_emoji_data()
    labels = sorted({r[LABEL_FIELD] for r in records})
    label_id = {label: i for i, label in enumerate(labels)}
    y_all = np.array([label_id[r[LABEL_FIELD]] for r in records], dtype=np.int64)
    tr_idx = np.flatnonzero(~heldout)
    ho_idx = np.flatnonzero(heldout)
    print(
        f"{len(labels)} {LABEL_FIELD} labels; train {len(tr_idx)} images, held out {len(ho_idx)} "
        f"(threads {torch.get_num_threads()})",
        flush=True,
    )

    x_train = torch.from_numpy(images[tr_idx])  # uint8 NHWC, normalized per batch
    y_train = torch.from_numpy(y_all[tr_idx])
    groups = [records[i]["group"] for i in tr_idx]
    group_size = {g: groups.count(g) for g in set(groups)}
    sample_w = torch.tensor([1.0 / group_size[g] for g in groups], dtype=torch.float64)

    meta = {"labels": labels, "label_field": LABEL_FIELD, "width": args.width, "feat_dim": args.feat_dim}
    model = build_model(meta)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"EmojiNet: {n_params / 1e6:.3f}M parameters, {args.feat_dim}-d features", flush=True)

    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    steps_per_epoch = math.ceil(len(tr_idx) / args.batch)
    total = steps_per_epoch * args.epochs
    warmup = steps_per_epoch // 2

    def lr_at(step: int) -> float:  # linear warm-up, then cosine to 2 % of the base rate
        if step < warmup:
            return args.lr * (step + 1) / warmup
        t = (step - warmup) / max(1, total - warmup)
        return args.lr * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * t)))

    t0 = time.time()
    step = 0
    for epoch in range(args.epochs):
        model.train()
        if args.balance == "group":  # an epoch = as many draws as training images
            perm = torch.multinomial(sample_w, len(tr_idx), replacement=True, generator=gen)
        else:
            perm = torch.randperm(len(tr_idx), generator=gen)
        loss_sum, correct, seen = 0.0, 0, 0
        for b in range(steps_per_epoch):
            idx = perm[b * args.batch : (b + 1) * args.batch]
            x = augment(EmojiNet.normalize(x_train[idx]), gen)
            y = y_train[idx]
            for g in opt.param_groups:
                g["lr"] = lr_at(step)
            logits = model(x)
            loss = F.cross_entropy(logits, y, label_smoothing=args.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            loss_sum += loss.item() * len(idx)
            correct += int((logits.argmax(1) == y).sum())
            seen += len(idx)
        ho_logits = predict(model, images[ho_idx])
        ho_acc = topk_acc(ho_logits, y_all[ho_idx], 1)
        print(
            f"epoch {epoch + 1}/{args.epochs}: loss {loss_sum / seen:.3f}, train acc (augmented) "
            f"{correct / seen:.3f}, held-out acc {ho_acc:.3f}, {time.time() - t0:.0f}s",
            flush=True,
        )

    train_logits = predict(model, images[tr_idx])
    ho_logits = predict(model, images[ho_idx])
    style = np.array([r["style"] for r in records])
    is_base = np.array([r["unified"] == r["group"] for r in records])
    tr_base, ho_base = is_base[tr_idx], is_base[ho_idx]
    result = {
        "label_field": LABEL_FIELD,
        "n_labels": len(labels),
        "params": n_params,
        "feat_dim": args.feat_dim,
        "train_images": int(len(tr_idx)),
        "heldout_images": int(len(ho_idx)),
        "train_acc": topk_acc(train_logits, y_all[tr_idx], 1),
        "heldout_acc": topk_acc(ho_logits, y_all[ho_idx], 1),
        "heldout_top5_acc": topk_acc(ho_logits, y_all[ho_idx], 5),
        # Base images only (one per emoji and style, no skin tones): what sweep prompts are.
        "train_base_acc": topk_acc(train_logits[tr_base], y_all[tr_idx][tr_base], 1),
        "heldout_base_acc": topk_acc(ho_logits[ho_base], y_all[ho_idx][ho_base], 1),
        "heldout_acc_by_style": {
            s: topk_acc(ho_logits[style[ho_idx] == s], y_all[ho_idx][style[ho_idx] == s], 1)
            for s in ("google", "twitter")
        },
        # Accuracy of always guessing the most frequent training label, for scale.
        "heldout_majority_baseline": float(
            (y_all[ho_idx] == np.bincount(y_all[tr_idx], minlength=len(labels)).argmax()).mean()
        ),
        "train_seconds": round(time.time() - t0, 1),
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "labels": labels,
        "train_counts": np.bincount(y_all[tr_idx], minlength=len(labels)).tolist(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": model.state_dict(), "meta": meta}, args.out)
    json_path = args.out.with_suffix(".json")
    json_path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(
        f"held-out accuracy {result['heldout_acc']:.3f} (top-5 {result['heldout_top5_acc']:.3f}, "
        f"base images {result['heldout_base_acc']:.3f}, majority baseline "
        f"{result['heldout_majority_baseline']:.3f}); train accuracy {result['train_acc']:.3f} "
        f"(base images {result['train_base_acc']:.3f}); wrote {args.out} and {json_path.name}",
        flush=True,
    )


if __name__ == "__main__":
    main()
