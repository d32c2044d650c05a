"""Shared helpers for the emoji training recipe (paths, captions, seeding, logging,
checkpoints). Imported by the other scripts in tools/train/; not run on its own."""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
DATA_DIR = HERE / "data"
RUNS_DIR = HERE / "runs"

DATASET_NPZ = "emoji64.npz"
CAPTIONS_JSON = "captions.json"

BOS = "<|startoftext|>"
EOS = "<|endoftext|>"
MAX_LEN = 77

# Extra words naming the art style of each source package: data.py's PNG sets (google,
# twitter) and data_svg.py's SVG sets (noto, twemoji, fluent).
STYLE_WORDS = {
    "google": "noto",
    "twitter": "twemoji",
    "noto": "noto",
    "twemoji": "twemoji",
    "fluent": "fluent",
}

# Micro-conditioning used for every training image (64 px, uncropped, aesthetic 6), the
# same vector AmusedPipeline builds for a 64x64 request with default arguments.
MICRO_CONDS = (64.0, 64.0, 0.0, 0.0, 6.0)


# --------------------------------------------------------------------------------------
# Captions
# --------------------------------------------------------------------------------------


def caption_variants(rec: dict) -> list[str]:
    """Every caption text a record can produce (used to train the tokenizer)."""
    base = rec["caption"]
    style = STYLE_WORDS[rec["style"]]
    out = [base, f"{base} {style}"]
    for sn in rec["short_names"]:
        out.append(f"{base} {sn}")
        out.append(f"{base} {sn} {style}")
    return out


def sample_caption(rec: dict, rng: random.Random, p_short: float = 0.25, p_style: float = 0.3) -> str:
    """Training caption: the lower-cased emoji.json name, sometimes followed by a short
    name and/or the style word. The plain name is always the first part, so a plain
    emoji name works as a prompt."""
    parts = [rec["caption"]]
    if rec["short_names"] and rng.random() < p_short:
        parts.append(rng.choice(rec["short_names"]))
    if rng.random() < p_style:
        parts.append(STYLE_WORDS[rec["style"]])
    return " ".join(parts)


def load_dataset(data_dir: Path = DATA_DIR):
    """Returns (images uint8 [N,64,64,3], records list, heldout bool [N])."""
    npz = np.load(data_dir / DATASET_NPZ)
    records = json.loads((data_dir / CAPTIONS_JSON).read_text(encoding="utf-8"))["records"]
    images = npz["images"]
    heldout = npz["heldout"].astype(bool)
    assert len(records) == images.shape[0] == heldout.shape[0]
    return images, records, heldout


def load_records(data_dir: Path = DATA_DIR, name: str = CAPTIONS_JSON):
    """Returns (records list, heldout bool [N]) from captions.json alone (what the transformer
    stage and the tokenizer need; the image array stays on disk), or from another captions file
    `name` in data.py's record format (data_svg.py's captions_svg.json)."""
    records = json.loads((data_dir / name).read_text(encoding="utf-8"))["records"]
    return records, np.array([bool(r["heldout"]) for r in records])


# --------------------------------------------------------------------------------------
# Reproducibility, logging, checkpoints
# --------------------------------------------------------------------------------------


def amp_context(amp: str | None, device: torch.device):
    """bf16 autocast when asked (--bf16), on CUDA or the CPU; a no-op otherwise."""
    if amp == "bf16" and device.type in ("cuda", "cpu"):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def setup_torch(seed: int):
    threads = int(os.environ.get("OMP_NUM_THREADS", "2"))
    torch.set_num_threads(max(1, threads))
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def rng_state(py_rng: random.Random | None = None) -> dict:
    st = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if py_rng is not None:
        st["py_rng"] = py_rng.getstate()
    return st


def set_rng_state(st: dict, py_rng: random.Random | None = None):
    torch.set_rng_state(st["torch"])
    np.random.set_state(st["numpy"])
    random.setstate(st["python"])
    if py_rng is not None and "py_rng" in st:
        py_rng.setstate(st["py_rng"])


def save_checkpoint(path: Path, state: dict):
    """Atomic save (write to a temp file, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path, map_location="cpu") -> dict:
    return torch.load(path, map_location=map_location, weights_only=False)


def cosine_lr(step: int, total: int, base: float, warmup: int, final_frac: float = 0.05) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    t = min(1.0, (step - warmup) / max(1, total - warmup))
    return base * (final_frac + (1 - final_frac) * 0.5 * (1 + math.cos(math.pi * t)))


def fmt_secs(s: float) -> str:
    s = int(max(0, s))
    h, r = divmod(s, 3600)
    m, sec = divmod(r, 60)
    return f"{h:d}:{m:02d}:{sec:02d}"


class Progress:
    """Prints step, smoothed s/step and ETA; also appends every line to a log file."""

    def __init__(self, total_steps: int, start_step: int, log_path: Path | None = None):
        self.total = total_steps
        self.start_step = start_step
        self.t0 = time.time()
        self.last = self.t0
        self.ema = None
        self.log_path = log_path

    def tick(self, step: int) -> float:
        """Call once per finished step; returns the seconds this step took."""
        now = time.time()
        dt = now - self.last
        self.last = now
        self.ema = dt if self.ema is None else 0.9 * self.ema + 0.1 * dt
        return dt

    def eta(self, step: int) -> float:
        done = step - self.start_step
        if done <= 0:
            return float("nan")
        avg = (time.time() - self.t0) / done
        return avg * (self.total - step)

    def line(self, step: int, msg: str):
        avg = (time.time() - self.t0) / max(1, step - self.start_step)
        txt = (
            f"[{time.strftime('%H:%M:%S')}] step {step}/{self.total} {msg} | "
            f"{avg:.2f} s/step | elapsed {fmt_secs(time.time() - self.t0)} | eta {fmt_secs(self.eta(step))}"
        )
        log(txt, self.log_path)


def log(msg: str, log_path: Path | None = None):
    print(msg, flush=True)
    if log_path is not None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "a", encoding="utf-8") as f:
            f.write(msg + "\n")


def eval_line(step: int, held: dict, train: dict, seconds: float) -> str:
    """The transformers' periodic evaluation as one log line: held-out and training scores."""
    scores = [" ".join(f"{k} {v:.3f}" for k, v in d.items()) for d in (held, train)]
    return f"  eval (EMA) step {step}: held-out {scores[0]} | train {scores[1]} ({seconds:.0f}s)"


def write_json(path: Path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB for images in [0, 1], shape [B, C, H, W]."""
    mse = ((a.clamp(0, 1) - b) ** 2).flatten(1).mean(1).clamp_min(1e-10)
    return 10 * torch.log10(1.0 / mse)


def die(msg: str):
    print(f"error: {msg}", file=sys.stderr, flush=True)
    sys.exit(1)


def npm_pack_spec(spec: str, tgz: Path, force: bool) -> Path:
    """`npm pack SPEC` into DATA_DIR (nothing installed), unless `tgz` (the tarball npm names
    it) is there already and not `force`; returns `tgz`."""
    import subprocess

    DATA_DIR.mkdir(parents=True, exist_ok=True)
    if tgz.exists() and not force:
        return tgz
    log(f"npm pack {spec} ...")
    t0 = time.time()
    subprocess.run(
        ["npm", "pack", spec, "--pack-destination", str(DATA_DIR), "--silent"],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    if not tgz.exists():
        sys.exit(f"npm pack did not produce {tgz}")
    log(f"  {tgz.name}: {tgz.stat().st_size / 1e6:.1f} MB in {time.time() - t0:.0f}s")
    return tgz


# Exit status of a training stage stopped by --max-minutes / --stop-after (rerun with --resume).
EXIT_STOPPED_EARLY = 3


def stop_early_if_asked(args, step: int, start_step: int, t_start: float, checkpoint, log_path: Path | None):
    """The training stages' --stop-after / --max-minutes: once either is reached before the last
    step, `checkpoint()` and exit with EXIT_STOPPED_EARLY."""
    stop_now = args.stop_after and step - start_step >= args.stop_after
    out_of_time = args.max_minutes and time.time() - t_start > args.max_minutes * 60
    if (stop_now or out_of_time) and step < args.steps:
        checkpoint()
        log(f"stopping early at step {step} (--max-minutes / --stop-after); rerun with --resume", log_path)
        sys.exit(EXIT_STOPPED_EARLY)


class StepBudget:
    """Wall-clock limits of a training loop that still end it normally (final weights, result
    JSON), unlike --max-minutes, which checkpoints and exits for a later --resume:

    --budget-minutes M   time steps 20-60 of this invocation, then set the total step count to
                         what fits in M minutes of training since the loop started (the log
                         prints it, so a run can be repeated with that --steps; the learning-rate
                         warm-up should outlast step 60, so the schedule is the one that --steps
                         would give). Evaluations during the rest are not accounted for.
    --finish-minutes F   once the loop has run F minutes, make the current step the last one
                         (the cosine schedule is then cut short): a hard wall-clock limit.

    Call after_step(step) after each finished step (after prog.tick), before the loop's
    `step == args.steps` checks, so the last step's log / eval / save run as usual."""

    def __init__(self, args, prog: Progress, device, log_path: Path | None, t_start: float,
                 first: int = 20, last: int = 60):
        self.args, self.prog, self.log_path, self.t_start = args, prog, log_path, t_start
        self.cuda = torch.device(device).type == "cuda"
        self.budget = getattr(args, "budget_minutes", 0.0) or 0.0
        self.finish = getattr(args, "finish_minutes", 0.0) or 0.0
        self.first, self.last, self.t_probe = first, last, None

    def after_step(self, step: int):
        args, done = self.args, step - self.prog.start_step
        if self.budget and done in (self.first, self.last):
            if self.cuda:
                torch.cuda.synchronize()  # steps are queued ahead of the GPU: time finished work
            if done == self.first:
                self.t_probe = time.time()
            elif self.t_probe is not None:
                per_step = (time.time() - self.t_probe) / (self.last - self.first)
                left = self.budget * 60 - (time.time() - self.t_start)
                args.steps = step + max(1, int(left / per_step))
                self.prog.total = args.steps
                log(f"--budget-minutes {self.budget}: {per_step * 1000:.1f} ms/step -> --steps {args.steps}", self.log_path)
        if self.finish and step < args.steps and time.time() - self.t_start > self.finish * 60:
            log(f"--finish-minutes {self.finish}: ending the run at step {step} of {args.steps}", self.log_path)
            args.steps = step
            self.prog.total = step


def add_budget_args(ap):
    """--budget-minutes / --finish-minutes (see StepBudget)."""
    ap.add_argument("--budget-minutes", type=float, default=0.0,
                    help="set --steps from the measured speed: time steps 20-60, then train as many steps as fit "
                         "in this many minutes (the log prints the number); the final weights are written as usual")
    ap.add_argument("--finish-minutes", type=float, default=0.0,
                    help="hard limit: after this many minutes of training, the current step becomes the last one "
                         "(final weights and results written as usual; unlike --max-minutes, no exit 3)")


class Prefetcher:
    """Makes training batches one step ahead on a worker thread, so that the CPU work of step
    s + 1 (index draws, masking, captions, pinned copies) overlaps the kernel launches of step s
    instead of following them (the GPU loop is bound by the Python side). `make(step)` must
    depend on `step` alone (seeded per step), so the batches are the same as made inline.

        pf = Prefetcher(make, first_step, last_step)
        batch = pf.get(step)   # make(step), and starts make(step + 1)
    """

    def __init__(self, make, first: int, end: int):
        from concurrent.futures import ThreadPoolExecutor

        self.make, self.end = make, end
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="batches")
        self.next = (first, self.pool.submit(make, first)) if first < end else None

    def get(self, step: int):
        if self.next is not None and self.next[0] == step:
            batch = self.next[1].result()
        else:  # a step out of order (not expected): made inline
            batch = self.make(step)
        self.next = (step + 1, self.pool.submit(self.make, step + 1)) if step + 1 < self.end else None
        return batch

    def restart(self, step: int):
        """Drops the batch made ahead and makes `step`'s again (after `make` changed, e.g. a
        smaller batch)."""
        if self.next is not None:
            self.next[1].cancel()
        self.next = (step, self.pool.submit(self.make, step)) if step < self.end else None

    def close(self):
        self.pool.shutdown(wait=True, cancel_futures=True)


def halve_batch_after_oom(args, step: int, start_step: int, opt, log_path: Path | None):
    """After torch.OutOfMemoryError in a training step: within the run's first 5 steps (and
    above batch 32) frees what the step allocated and halves args.batch, so that the caller
    goes on with smaller batches (same steps and schedule; step budgets are measured later, on
    steps 20-60); otherwise re-raises."""
    if step > start_step + 5 or args.batch <= 32:
        raise
    opt.zero_grad(set_to_none=True)
    torch.cuda.empty_cache()
    args.batch //= 2
    log(f"out of GPU memory at batch {2 * args.batch}: going on at batch {args.batch}", log_path)
