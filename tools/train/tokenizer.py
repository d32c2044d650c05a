"""Train a small CLIP-format byte-level BPE tokenizer on the emoji captions.

Conventions (the same as OpenAI CLIP's tokenizer, so any CLIP tokenizer implementation
can run it):
  * normaliser: NFC, collapse whitespace runs to one space, lower-case
  * pre-tokeniser: CLIP's split regex, then byte-level mapping (no prefix space)
  * BPE with end-of-word suffix "</w>", no continuing-subword prefix
  * vocabulary layout: 256 byte symbols, the same 256 with "</w>", one entry per merge
    in merge order, then <|startoftext|> and <|endoftext|> (unk = pad = eos)
  * ids: <|startoftext|> text <|endoftext|>, padded with <|endoftext|> to 77

The merges are learned with the `tokenizers` library (BpeTrainer) on the training
captions (all caption variants: name, name + short name, name + style word) of the
records that are not held out: data.py's captions.json by default, or any captions file
in its record format with `--captions` (data_svg.py's captions_svg.json, whose style words
include "fluent" and whose emoji names v1's tokenizer splits into 2+ pieces in 1172 of
2409 words).

The learned set of merges is the same on every run, but BpeTrainer orders merges of equal
count by its hash maps' iteration order, which changes from process to process: at --vocab-size
2048 on captions_svg.json three runs gave three merges.txt that differ in where such ties
stand (e.g. "co p</w>" one place earlier or later), so ids differ between runs. A model is
tied to the tokenizer it was trained with, which is why the exported folder carries its own
tokenizer/ (and why tools/train/v2/model's is the one the later stages use), not a rerun.

Writes runs/tokenizer/: vocab.json, merges.txt, tokenizer.json, tokenizer_config.json,
special_tokens_map.json. Then checks that four encoders agree on every caption and on a
set of awkward strings: the tokenizers.Tokenizer built here, transformers' CLIPTokenizer
built from vocab.json + merges.txt, CLIPTokenizer.from_pretrained(runs/tokenizer), and a
small pure-Python BPE written below.

Usage: python tokenizer.py [--vocab-size 1536] [--out runs/tokenizer] [--captions FILE]
"""

from __future__ import annotations

import argparse
import json
import unicodedata
from pathlib import Path

import regex
from tokenizers import Regex, Tokenizer, decoders, normalizers, pre_tokenizers, processors
from tokenizers.models import BPE
from tokenizers.trainers import BpeTrainer

from common import BOS, EOS, MAX_LEN, RUNS_DIR, caption_variants, load_records, log

SPLIT_PATTERN = r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""

EXTRA_TEST_STRINGS = [
    "",
    "blue heart",
    "Grinning   FACE\n",
    "a cat face, a dog face and 3 apples!",
    "rescue worker\u2019s helmet",
    "c\u00f4te d\u2019ivoire flag",
    "cafe\u0301 (decomposed accent)",
    "it's a dog's life",
    "zebra qwxj unseen wordz",
    "emoji \U0001F499 itself",
    "<|startoftext|> in the text <|endoftext|>",
    " ".join(["green apple"] * 60),
]


def byte_to_symbol() -> dict[int, str]:
    """CLIP/GPT-2 byte -> printable unicode symbol map."""
    visible = list(range(0x21, 0x7F)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    table = {b: chr(b) for b in visible}
    n = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + n)
            n += 1
    return table


def symbol_order() -> list[str]:
    """Vocabulary order of the 256 byte symbols (visible bytes first, then the rest)."""
    table = byte_to_symbol()
    visible = [b for b in range(256) if table[b] == chr(b)]
    rest = [b for b in range(256) if table[b] != chr(b)]
    return [table[b] for b in visible + rest]


def make_normalizer():
    return normalizers.Sequence([normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()])


def make_pre_tokenizer():
    return pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(SPLIT_PATTERN), behavior="removed", invert=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )


def learn_merges(texts: list[str], vocab_size: int) -> list[tuple[str, str]]:
    n_merges = vocab_size - 512 - 2
    tok = Tokenizer(BPE(unk_token=None, continuing_subword_prefix="", end_of_word_suffix="</w>"))
    tok.normalizer = make_normalizer()
    tok.pre_tokenizer = make_pre_tokenizer()
    # The trainer's vocabulary = alphabet (256 symbols + the "</w>" forms it sees) + merges;
    # ask for plenty and cut the merge list to the size wanted.
    trainer = BpeTrainer(
        vocab_size=vocab_size + 1024,
        min_frequency=2,
        show_progress=False,
        special_tokens=[],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        end_of_word_suffix="</w>",
        continuing_subword_prefix="",
    )
    tok.train_from_iterator(texts, trainer=trainer)
    model = json.loads(tok.to_str())["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
    if len(merges) < n_merges:
        log(f"note: only {len(merges)} merges with frequency >= 2 (asked for {n_merges})")
    return merges[:n_merges]


def build_vocab(merges) -> dict[str, int]:
    base = symbol_order()
    tokens = base + [s + "</w>" for s in base]
    seen = set(tokens)
    for a, b in merges:
        assert a in seen and b in seen, (a, b)
        t = a + b
        if t not in seen:
            tokens.append(t)
            seen.add(t)
    tokens += [BOS, EOS]
    return {t: i for i, t in enumerate(tokens)}


def build_tokenizer(vocab: dict, merges: list) -> Tokenizer:
    tok = Tokenizer(
        BPE(
            vocab=vocab,
            merges=merges,
            dropout=None,
            continuing_subword_prefix="",
            end_of_word_suffix="</w>",
            fuse_unk=False,
            unk_token=EOS,
        )
    )
    tok.normalizer = make_normalizer()
    tok.pre_tokenizer = make_pre_tokenizer()
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([BOS, EOS])
    tok.post_processor = processors.RobertaProcessing(
        (EOS, vocab[EOS]), (BOS, vocab[BOS]), trim_offsets=False, add_prefix_space=False
    )
    return tok


def write_files(out: Path, vocab: dict, merges: list, tok: Tokenizer):
    out.mkdir(parents=True, exist_ok=True)
    (out / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    with open(out / "merges.txt", "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n")
        for a, b in merges:
            f.write(f"{a} {b}\n")
    tok.save(str(out / "tokenizer.json"))
    special = {"bos_token": BOS, "eos_token": EOS, "pad_token": EOS, "unk_token": EOS}
    (out / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n", encoding="utf-8")
    cfg = dict(special)
    cfg.update(
        {
            "tokenizer_class": "CLIPTokenizer",
            "model_max_length": MAX_LEN,
            "add_prefix_space": False,
            "do_lower_case": True,
            "errors": "replace",
            "clean_up_tokenization_spaces": False,
        }
    )
    (out / "tokenizer_config.json").write_text(json.dumps(cfg, indent=2) + "\n", encoding="utf-8")


class ReferenceBPE:
    """Minimal independent CLIP BPE encoder, used only to cross-check the libraries."""

    def __init__(self, vocab: dict, merges: list):
        self.vocab = vocab
        self.ranks = {m: i for i, m in enumerate(merges)}
        self.sym = byte_to_symbol()
        self.split = regex.compile(SPLIT_PATTERN)

    def word(self, w: str) -> list[str]:
        parts = [self.sym[b] for b in w.encode("utf-8")]
        parts[-1] += "</w>"
        while len(parts) > 1:
            best = min(zip(parts, parts[1:]), key=lambda p: self.ranks.get(p, float("inf")))
            if best not in self.ranks:
                break
            out, i = [], 0
            while i < len(parts):
                if i + 1 < len(parts) and (parts[i], parts[i + 1]) == best:
                    out.append(parts[i] + parts[i + 1])
                    i += 2
                else:
                    out.append(parts[i])
                    i += 1
            parts = out
        return parts

    def __call__(self, text: str) -> list[int]:
        text = regex.sub(r"\s+", " ", unicodedata.normalize("NFC", text)).lower()
        ids = [self.vocab[BOS]]
        # Special tokens written in the text are matched as whole tokens.
        for piece in regex.split(r"(<\|startoftext\|>|<\|endoftext\|>)", text):
            if piece in (BOS, EOS):
                ids.append(self.vocab[piece])
                continue
            for w in self.split.findall(piece):
                ids += [self.vocab.get(p, self.vocab[EOS]) for p in self.word(w)]
        ids = ids[: MAX_LEN - 1] + [self.vocab[EOS]] if len(ids) >= MAX_LEN else ids + [self.vocab[EOS]]
        return ids + [self.vocab[EOS]] * (MAX_LEN - len(ids))


def verify(out: Path, vocab: dict, merges: list, tok: Tokenizer, texts: list[str]):
    from transformers import CLIPTokenizer

    hf_files = CLIPTokenizer(vocab=str(out / "vocab.json"), merges=str(out / "merges.txt"), model_max_length=MAX_LEN)
    hf_dir = CLIPTokenizer.from_pretrained(str(out))
    assert hf_dir.model_max_length == MAX_LEN, hf_dir.model_max_length
    for h in (hf_files, hf_dir):
        assert h.bos_token_id == vocab[BOS] and h.eos_token_id == vocab[EOS] and h.pad_token_id == vocab[EOS]
        assert len(h) == len(vocab), (len(h), len(vocab))
    ref = ReferenceBPE(vocab, merges)
    tok.enable_truncation(MAX_LEN)
    tok.enable_padding(length=MAX_LEN, pad_id=vocab[EOS], pad_token=EOS)
    n_unk_free = 0
    for t in texts:
        a = hf_files(t, padding="max_length", max_length=MAX_LEN, truncation=True).input_ids
        b = hf_dir(t, padding="max_length", max_length=MAX_LEN, truncation=True).input_ids
        c = tok.encode(t).ids
        # Special-token strings inside the text: the libraries split them out; the reference does too.
        d = ref(t)
        assert a == b == c == d, f"tokenizers disagree on {t!r}:\n{a}\n{b}\n{c}\n{d}"
        n_unk_free += 1
    log(f"tokenizer check: {n_unk_free} strings encode identically with 4 implementations")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vocab-size", type=int, default=1536, help="total vocabulary size (incl. 512 byte symbols + 2 specials)")
    ap.add_argument("--out", type=Path, default=RUNS_DIR / "tokenizer")
    ap.add_argument("--captions", type=Path, default=None,
                    help="captions file in data.py's record format, each record with a heldout flag "
                         "(default: data.py's captions.json)")
    ap.add_argument("--force", action="store_true")
    args = ap.parse_args()
    if (args.out / "tokenizer.json").exists() and not args.force:
        log(f"{args.out}/tokenizer.json exists; nothing to do (use --force to rebuild)")
        return

    records, heldout = load_records(args.captions.parent, args.captions.name) if args.captions else load_records()
    texts = []
    for rec, held in zip(records, heldout):
        if not held:
            texts += caption_variants(rec)
    merges = learn_merges(texts, args.vocab_size)
    vocab = build_vocab(merges)
    tok = build_tokenizer(vocab, merges)
    write_files(args.out, vocab, merges, tok)

    all_texts = sorted({v for r in records for v in caption_variants(r)}) + EXTRA_TEST_STRINGS
    verify(args.out, vocab, merges, Tokenizer.from_file(str(args.out / "tokenizer.json")), all_texts)
    lens = [len(tok.encode(r["caption"]).ids) for r in records]
    log(
        f"wrote {args.out}: vocab {len(vocab)} ({len(merges)} merges), "
        f"caption length in tokens incl. bos/eos: mean {sum(lens) / len(lens):.1f}, max {max(lens)}"
    )
    for t in ("blue heart", "grinning face", "green apple", "côte d’ivoire flag", "thumbs up sign: dark skin tone"):
        log(f"  {t!r} -> {tok.encode(t).tokens}")


if __name__ == "__main__":
    main()
