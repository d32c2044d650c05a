//! CLIP BPE tokenizer (via the `tokenizers` crate), from `tokenizer.json` or from
//! `vocab.json` + `merges.txt`, with the aMUSEd pipeline's padding and truncation.

use crate::io::files;
use std::path::Path;

use tokenizers::models::bpe::BPE;
use tokenizers::normalizers::{Lowercase, NFC, Replace, Sequence as NormSequence};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence as PreSequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, SplitDelimiterBehavior, Tokenizer};

use crate::error::{Error, Result};

/// The word pattern of CLIP's tokenizer.
const CLIP_PATTERN: &str = r"'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+";
const BOS: &str = "<|startoftext|>";
const EOS: &str = "<|endoftext|>";

pub struct ClipTokenizer {
    tokenizer: Tokenizer,
    pub bos_id: u32,
    pub eos_id: u32,
    pub pad_id: u32,
    pub max_length: usize,
}

fn err(dir: &Path, e: impl std::fmt::Display) -> Error {
    Error::Tokenizer {
        path: dir.display().to_string(),
        message: e.to_string(),
    }
}

/// A special token's text from tokenizer_config.json / special_tokens_map.json, which hold it
/// either as a string or as `{"content": ...}`.
fn special(dir: &Path, key: &str) -> Option<String> {
    for file in ["special_tokens_map.json", "tokenizer_config.json"] {
        let Ok(text) = files::read_to_string(&dir.join(file)) else {
            continue;
        };
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else {
            continue;
        };
        match &v[key] {
            serde_json::Value::String(s) => return Some(s.clone()),
            serde_json::Value::Object(o) => {
                if let Some(serde_json::Value::String(s)) = o.get("content") {
                    return Some(s.clone());
                }
            }
            _ => {}
        }
    }
    None
}

fn max_length(dir: &Path) -> usize {
    files::read_to_string(&dir.join("tokenizer_config.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| v["model_max_length"].as_u64())
        .filter(|&n| n > 2 && n <= 4096)
        .map_or(77, |n| n as usize)
}

impl ClipTokenizer {
    /// Loads the tokenizer folder of a pipeline.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let json = dir.join("tokenizer.json");
        let tokenizer = if files::is_file(&json) {
            let bytes = files::read(&json).map_err(|e| err(&json, e))?;
            Tokenizer::from_bytes(bytes).map_err(|e| err(&json, e))?
        } else {
            let (vocab, merges) = (dir.join("vocab.json"), dir.join("merges.txt"));
            if !files::is_file(&vocab) || !files::is_file(&merges) {
                return Err(err(
                    dir,
                    "neither tokenizer.json nor vocab.json + merges.txt found",
                ));
            }
            Self::from_vocab_merges(&vocab, &merges).map_err(|e| err(dir, e))?
        };
        let id = |tok: &str| {
            tokenizer
                .token_to_id(tok)
                .ok_or_else(|| err(dir, format!("vocabulary lacks {tok}")))
        };
        let bos_id = id(&special(dir, "bos_token").unwrap_or_else(|| BOS.into()))?;
        let eos_id = id(&special(dir, "eos_token").unwrap_or_else(|| EOS.into()))?;
        let pad_id = id(&special(dir, "pad_token").unwrap_or_else(|| EOS.into()))?;
        Ok(Self {
            tokenizer,
            bos_id,
            eos_id,
            pad_id,
            max_length: max_length(dir),
        })
    }

    /// The same normaliser, pre-tokeniser and BPE settings the reference builds for CLIP.
    fn from_vocab_merges(vocab: &Path, merges: &Path) -> tokenizers::Result<Tokenizer> {
        let vocab: std::collections::HashMap<String, u32> =
            serde_json::from_str(&files::read_to_string(vocab)?)?;
        let merges: Vec<(String, String)> = files::read_to_string(merges)?
            .lines()
            .filter(|l| !l.starts_with("#version") && !l.trim().is_empty())
            .filter_map(|l| l.split_once(' '))
            .map(|(a, b)| (a.to_owned(), b.to_owned()))
            .collect();
        let bpe = BPE::builder()
            .vocab_and_merges(
                vocab
                    .into_iter()
                    .collect::<tokenizers::models::bpe::Vocab>(),
                merges,
            )
            .end_of_word_suffix("</w>".into())
            .unk_token(EOS.into())
            .build()?;
        let mut t = Tokenizer::new(bpe);
        t.with_normalizer(Some(NormSequence::new(vec![
            NFC.into(),
            Replace::new(
                tokenizers::normalizers::replace::ReplacePattern::Regex(r"\s+".into()),
                " ",
            )?
            .into(),
            Lowercase.into(),
        ])));
        t.with_pre_tokenizer(Some(PreSequence::new(vec![
            Split::new(
                SplitPattern::Regex(CLIP_PATTERN.into()),
                SplitDelimiterBehavior::Removed,
                true,
            )?
            .into(),
            ByteLevel::new(false, false, false).into(),
        ])));
        t.with_decoder(Some(tokenizers::decoders::byte_level::ByteLevel::default()));
        t.add_special_tokens(&[AddedToken::from(BOS, true), AddedToken::from(EOS, true)]);
        Ok(t)
    }

    /// `[bos] text [eos]` truncated and padded to `max_length` ids, as the pipeline's
    /// `tokenizer(prompt, padding="max_length", truncation=True)` gives.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .tokenizer
            .encode(text, false)
            .map_err(|e| err(Path::new("<prompt>"), e))?;
        let body = enc.get_ids();
        let keep = body.len().min(self.max_length - 2);
        let mut ids = Vec::with_capacity(self.max_length);
        ids.push(self.bos_id);
        ids.extend_from_slice(&body[..keep]);
        ids.push(self.eos_id);
        ids.resize(self.max_length, self.pad_id);
        Ok(ids)
    }
}
