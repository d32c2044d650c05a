//! The T5 encoder (transformers `T5EncoderModel`, `last_hidden_state`) and ByT5's byte
//! tokenizer, as Paella v3 conditions on them (`google/byt5-xl`).
//!
//! Weight names follow transformers: `shared.weight` (or `encoder.embed_tokens.weight`),
//! `encoder.block.{i}.layer.0.SelfAttention.{q,k,v,o}.weight`, the relative position table
//! `encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight` `[buckets, heads]`,
//! `encoder.block.{i}.layer.0.layer_norm.weight`, `encoder.block.{i}.layer.1.DenseReluDense.
//! {wi_0,wi_1,wo}.weight` (gated) or `.{wi,wo}.weight`, `encoder.block.{i}.layer.1.
//! layer_norm.weight`, `encoder.final_layer_norm.weight`. A full encoder–decoder checkpoint
//! (`T5ForConditionalGeneration`) loads too: its decoder tensors are not read.

use std::path::Path;

use serde::Deserialize;

use super::nn::{Linear, Norm};
use crate::error::{Error, Result};
use crate::gpu::{GpuContext, Recorder, Tensor};
use crate::io::{Loader, read_config};
use crate::ops;
use crate::ops::matmul::{Activation, BLayout};

/// The fields of a transformers `T5Config` the encoder needs.
#[derive(Clone, Debug, Deserialize)]
pub struct Config {
    pub vocab_size: usize,
    pub d_model: usize,
    pub d_kv: usize,
    pub d_ff: usize,
    pub num_heads: usize,
    pub num_layers: usize,
    #[serde(default = "default_buckets")]
    pub relative_attention_num_buckets: usize,
    #[serde(default = "default_max_distance")]
    pub relative_attention_max_distance: usize,
    #[serde(default = "default_eps")]
    pub layer_norm_epsilon: f32,
    /// `gated-gelu` (T5 v1.1, ByT5: tanh GELU), `gelu`, `silu` (ReLU variants are refused).
    pub feed_forward_proj: String,
}

fn default_buckets() -> usize {
    32
}
fn default_max_distance() -> usize {
    128
}
fn default_eps() -> f32 {
    1e-6
}

impl Config {
    /// (gated, activation) of `feed_forward_proj`; transformers maps `gelu` in a gated
    /// feed-forward to the tanh approximation (`gelu_new`).
    fn feed_forward(&self, path: &Path) -> Result<(bool, Activation)> {
        let ff = self.feed_forward_proj.as_str();
        let (gated, act) = match ff.strip_prefix("gated-") {
            Some(act) => (true, act),
            None => (false, ff),
        };
        let activation = match (gated, act) {
            (true, "gelu" | "gelu_new" | "gelu_pytorch_tanh") => Activation::GeluTanh,
            (false, "gelu") => Activation::GeluErf,
            (false, "gelu_new" | "gelu_pytorch_tanh") => Activation::GeluTanh,
            (_, "silu") => Activation::Silu,
            _ => {
                return Err(Error::config(
                    path,
                    "feed_forward_proj",
                    format!("{ff:?} is not supported (gated-gelu, gelu, silu)"),
                ));
            }
        };
        Ok((gated, activation))
    }
}

/// ByT5's tokenizer: each UTF-8 byte b becomes id b + 3, then the end-of-sequence id 1 (ids 0,
/// 1, 2 are pad, eos, unk). Longer texts are cut to `max_length` ids, the last being eos (the
/// transformers tokenizer with `truncation=True`).
pub fn byt5_ids(text: &str, max_length: usize) -> Vec<u32> {
    let keep = max_length.saturating_sub(1);
    let mut ids: Vec<u32> = text.bytes().take(keep).map(|b| u32::from(b) + 3).collect();
    ids.push(1);
    ids
}

/// ReLU feed-forward or gated unit of a T5 block (`DenseReluDense`).
struct FeedForward {
    /// `wi` (plain) or `wi_1 | wi_0` stacked (gated: value, then gate).
    wi: Linear,
    gated: bool,
    activation: Activation,
    wo: Linear,
}

struct Block {
    /// `layer.0.layer_norm`
    attn_norm: Norm,
    /// `q | k | v` stacked.
    qkv: Linear,
    o: Linear,
    /// `layer.1.layer_norm`
    ff_norm: Norm,
    ff: FeedForward,
}

/// `T5EncoderModel` (the encoder stack of T5 / ByT5).
pub struct T5Encoder {
    pub config: Config,
    embed_tokens: ops::embed::Table,
    /// `[buckets, heads]`, kept on the host: the position bias is built per sequence length.
    relative_attention_bias: Vec<f32>,
    blocks: Vec<Block>,
    final_layer_norm: Norm,
}

impl T5Encoder {
    /// Loads `config.json` and the weights (`model.safetensors`, sharded, or
    /// `pytorch_model.bin`) of a transformers T5 folder.
    ///
    /// # Errors
    /// Missing files or tensors, shapes that disagree with the config, an unsupported
    /// `feed_forward_proj`.
    pub fn load(ctx: &GpuContext, dir: &Path) -> Result<Self> {
        let cfg_path = dir.join("config.json");
        let config: Config = read_config(&cfg_path)?;
        let ff = config.feed_forward(&cfg_path)?;
        if config.num_heads == 0 || config.d_kv == 0 || config.num_layers == 0 {
            return Err(Error::config(
                &cfg_path,
                "num_heads",
                "num_heads, d_kv and num_layers must be positive",
            ));
        }
        Loader::load_component(ctx, dir, &["model", "pytorch_model"], true, |l| {
            Self::new(l, &config, ff)
        })
    }

    /// Builds the encoder from any loader (e.g. synthetic weights for benchmarks).
    ///
    /// # Errors
    /// An unsupported `feed_forward_proj`, missing tensors.
    pub fn from_loader(l: &Loader<'_>, c: &Config) -> Result<Self> {
        let ff = c.feed_forward(std::path::Path::new("<config>"))?;
        Self::new(l, c, ff)
    }

    fn new(l: &Loader<'_>, c: &Config, (gated, activation): (bool, Activation)) -> Result<Self> {
        let (d, inner) = (c.d_model, c.num_heads * c.d_kv);
        let embed_name = if l.contains("shared.weight") {
            "shared.weight"
        } else {
            "encoder.embed_tokens.weight"
        };
        let embed_tokens = l.table(embed_name, &[c.vocab_size, d])?;
        let e = l.pp("encoder");
        let relative_attention_bias = e.pp("block.0.layer.0.SelfAttention").host(
            "relative_attention_bias.weight",
            &[c.relative_attention_num_buckets, c.num_heads],
        )?;
        let blocks = (0..c.num_layers)
            .map(|i| {
                let b = e.pp("block").pp(i).pp("layer");
                let sa = b.pp("0.SelfAttention");
                let dense = b.pp("1.DenseReluDense");
                let wi = if gated {
                    Linear::stacked(&dense, &["wi_1", "wi_0"], d, c.d_ff, false)?
                } else {
                    Linear::new(&dense.pp("wi"), d, c.d_ff, false)?
                };
                Ok(Block {
                    attn_norm: Norm::rms(&b.pp("0.layer_norm"), d, c.layer_norm_epsilon, true)?,
                    qkv: Linear::stacked(&sa, &["q", "k", "v"], d, inner, false)?,
                    o: Linear::new(&sa.pp("o"), inner, d, false)?,
                    ff_norm: Norm::rms(&b.pp("1.layer_norm"), d, c.layer_norm_epsilon, true)?,
                    ff: FeedForward {
                        wi,
                        gated,
                        activation,
                        wo: Linear::new(&dense.pp("wo"), c.d_ff, d, false)?,
                    },
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            config: c.clone(),
            embed_tokens,
            relative_attention_bias,
            blocks,
            final_layer_norm: Norm::rms(&e.pp("final_layer_norm"), d, c.layer_norm_epsilon, true)?,
        })
    }

    /// T5's bidirectional relative position bucket of key position minus query position
    /// (transformers `_relative_position_bucket`, its f32 logarithm included).
    fn bucket(&self, relative: i64) -> usize {
        let half = (self.config.relative_attention_num_buckets / 2) as i64;
        let mut bucket = if relative > 0 { half } else { 0 };
        let n = relative.abs();
        let max_exact = half / 2;
        if n < max_exact {
            bucket += n;
        } else {
            let ratio = (n as f32 / max_exact as f32).ln()
                / (self.config.relative_attention_max_distance as f64 / max_exact as f64).ln()
                    as f32;
            let large = max_exact + (ratio * (half - max_exact) as f32) as i64;
            bucket += large.min(half - 1);
        }
        bucket as usize
    }

    /// The position bias `[heads, len, len]` added to every layer's attention scores.
    fn position_bias(&self, ctx: &GpuContext, len: usize) -> Result<Tensor> {
        let heads = self.config.num_heads;
        let mut v = vec![0.0f32; heads * len * len];
        for i in 0..len {
            for j in 0..len {
                let b = self.bucket(j as i64 - i as i64);
                for h in 0..heads {
                    v[(h * len + i) * len + j] = self.relative_attention_bias[b * heads + h];
                }
            }
        }
        Tensor::from_f32(ctx, "t5.position_bias", &[heads, len, len], &v)
    }

    /// `last_hidden_state` `[1, L, d_model]` of one sequence of token ids (no attention mask:
    /// what Paella passes).
    ///
    /// # Errors
    /// An empty sequence, ids outside the vocabulary, GPU failures.
    pub fn forward(&self, rec: &mut Recorder<'_>, ids: &[u32]) -> Result<Tensor> {
        const OP: &str = "t5_encoder";
        let c = &self.config;
        let len = ids.len();
        if len == 0 {
            return Err(Error::shape(OP, "no tokens to encode"));
        }
        ops::embed::check_ids("input_ids", ids, c.vocab_size)?;
        let ctx = rec.ctx();
        let t = Tensor::from_u32(ctx, "input_ids", &[len], ids)?;
        let mut x = ops::embed::embedding_table(rec, &t, &self.embed_tokens)?
            .reshape(&[1, len, c.d_model])?;
        let bias = self.position_bias(ctx, len)?;
        let (heads, dk) = (c.num_heads, c.d_kv);
        let inner = heads * dk;
        for b in &self.blocks {
            let h = b.attn_norm.forward(rec, &x)?;
            let qkv = b.qkv.forward(rec, &h)?;
            // [1, L, 3·inner] → Q, K, V as [heads, L, d_kv].
            let split = |rec: &mut Recorder<'_>, part: usize| -> Result<Tensor> {
                let s = ops::layout::slice(rec, &qkv, 2, part * inner, inner)?;
                let s = ops::layout::permute(rec, &s.reshape(&[len, heads, dk])?, &[1, 0, 2])?;
                Ok(s)
            };
            let (q, k, v) = (split(rec, 0)?, split(rec, 1)?, split(rec, 2)?);
            // T5 does not scale the scores.
            let scores = ops::matmul::matmul(rec, &q, &k, None, BLayout::NK)?;
            let scores = ops::elementwise::add(rec, &scores, &bias)?;
            let probs = ops::elementwise::softmax(rec, &scores, 1.0)?;
            let o = ops::matmul::matmul(rec, &probs, &v, None, BLayout::KN)?;
            let o = ops::layout::permute(rec, &o, &[1, 0, 2])?.reshape(&[1, len, inner])?;
            x = b.o.forward_residual(rec, &o, Some(&x))?;
            let h = b.ff_norm.forward(rec, &x)?;
            let h = if b.ff.gated {
                b.ff.wi.forward_gated(rec, &h, b.ff.activation)?
            } else {
                b.ff.wi
                    .forward_fused(rec, &h, Some(b.ff.activation), None)?
            };
            x = b.ff.wo.forward_residual(rec, &h, Some(&x))?;
        }
        self.final_layer_norm.forward(rec, &x)
    }
}
