//! CLIP text encoder with projection (transformers `CLIPTextModelWithProjection`), as aMUSEd
//! uses it: the pooled, projected EOS state and the penultimate layer's hidden states.
//! Paper: Radford et al. 2021, <https://arxiv.org/abs/2103.00020>.

use std::path::Path;

use serde::Deserialize;

use super::nn::{Linear, Norm};
use crate::error::{Error, Result};
use crate::gpu::{DType, GpuContext, Recorder, Tensor};
use crate::io::{Loader, read_config};
use crate::ops;
use crate::ops::attention::AttentionSpec;
use crate::ops::elementwise::UnaryOp;

/// `config.json` of a transformers `CLIPTextModelWithProjection` (keys as written there).
#[derive(Clone, Debug, Deserialize)]
pub struct Config {
    #[serde(default = "d49408")]
    pub vocab_size: usize,
    #[serde(default = "d512")]
    pub hidden_size: usize,
    #[serde(default = "d2048")]
    pub intermediate_size: usize,
    #[serde(default = "d512")]
    pub projection_dim: usize,
    #[serde(default = "d12")]
    pub num_hidden_layers: usize,
    #[serde(default = "d8")]
    pub num_attention_heads: usize,
    #[serde(default = "d77")]
    pub max_position_embeddings: usize,
    #[serde(default = "quick_gelu")]
    pub hidden_act: String,
    #[serde(default = "eps")]
    pub layer_norm_eps: f32,
    #[serde(default = "d2")]
    pub eos_token_id: u32,
}

fn d49408() -> usize {
    49408
}
fn d2() -> u32 {
    2
}
fn d8() -> usize {
    8
}
fn d12() -> usize {
    12
}
fn d77() -> usize {
    77
}
fn d512() -> usize {
    512
}
fn d2048() -> usize {
    2048
}
fn quick_gelu() -> String {
    "quick_gelu".into()
}
fn eps() -> f32 {
    1e-5
}

impl Config {
    /// Reads a `CLIPTextModelWithProjection` config, or a full `CLIPModel`'s (the hub's LAION
    /// CLIP folders): its nested `text_config` with the top-level `projection_dim`.
    ///
    /// # Errors
    /// An unreadable or invalid file.
    pub fn read(path: &Path) -> Result<Self> {
        let mut v: serde_json::Value = read_config(path)?;
        if let Some(text) = v.get("text_config").cloned() {
            let projection = v.get("projection_dim").cloned();
            v = text;
            if let (Some(p), Some(obj)) = (projection, v.as_object_mut()) {
                obj.entry("projection_dim").or_insert(p);
            }
        }
        serde_json::from_value(v).map_err(|e| Error::file(path, format!("invalid config: {e}")))
    }

    fn activation(&self, file: &Path) -> Result<UnaryOp> {
        match self.hidden_act.as_str() {
            "quick_gelu" => Ok(UnaryOp::QuickGelu),
            "gelu" => Ok(UnaryOp::GeluErf),
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Ok(UnaryOp::GeluTanh),
            other => Err(Error::config(
                file,
                "hidden_act",
                format!("unsupported activation {other:?}"),
            )),
        }
    }
}

struct EncoderLayer {
    layer_norm1: Norm,
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    out_proj: Linear,
    layer_norm2: Norm,
    fc1: Linear,
    fc2: Linear,
}

impl EncoderLayer {
    fn new(l: &Loader<'_>, c: &Config) -> Result<Self> {
        let (d, i) = (c.hidden_size, c.intermediate_size);
        let a = l.pp("self_attn");
        Ok(Self {
            layer_norm1: Norm::layer(&l.pp("layer_norm1"), d, c.layer_norm_eps, true, true)?,
            q_proj: Linear::new(&a.pp("q_proj"), d, d, true)?,
            k_proj: Linear::new(&a.pp("k_proj"), d, d, true)?,
            v_proj: Linear::new(&a.pp("v_proj"), d, d, true)?,
            out_proj: Linear::new(&a.pp("out_proj"), d, d, true)?,
            layer_norm2: Norm::layer(&l.pp("layer_norm2"), d, c.layer_norm_eps, true, true)?,
            fc1: Linear::new(&l.pp("mlp.fc1"), d, i, true)?,
            fc2: Linear::new(&l.pp("mlp.fc2"), i, d, true)?,
        })
    }

    fn forward(
        &self,
        rec: &mut Recorder<'_>,
        x: &Tensor,
        spec: &AttentionSpec,
        act: UnaryOp,
    ) -> Result<Tensor> {
        let h = self.layer_norm1.forward(rec, x)?;
        let q = self.q_proj.forward(rec, &h)?;
        let k = self.k_proj.forward(rec, &h)?;
        let v = self.v_proj.forward(rec, &h)?;
        let a = ops::attention::attention(rec, &q, &k, &v, spec)?;
        let a = self.out_proj.forward(rec, &a)?;
        let x = ops::elementwise::add(rec, x, &a)?;
        let h = self.layer_norm2.forward(rec, &x)?;
        let h = self.fc1.forward(rec, &h)?;
        let h = ops::elementwise::unary(rec, &h, act)?;
        let h = self.fc2.forward(rec, &h)?;
        ops::elementwise::add(rec, &x, &h)
    }
}

/// What aMUSEd takes from the text encoder.
pub struct TextEmbeddings {
    /// `text_embeds`: projection of the final-normed EOS state, `[B, projection_dim]`.
    pub pooled: Tensor,
    /// `hidden_states[-2]`: the input of the last encoder layer, `[B, L, hidden_size]`.
    pub penultimate: Tensor,
}

pub struct ClipTextModel {
    pub config: Config,
    token_embedding: ops::embed::Table,
    position_embedding: Tensor,
    layers: Vec<EncoderLayer>,
    final_layer_norm: Norm,
    text_projection: Linear,
    activation: UnaryOp,
}

impl ClipTextModel {
    /// Loads `config.json` and the weights of a transformers text-encoder folder.
    pub fn load(ctx: &GpuContext, dir: &Path) -> Result<Self> {
        let cfg_path = dir.join("config.json");
        let config = Config::read(&cfg_path)?;
        let activation = config.activation(&cfg_path)?;
        if config.num_attention_heads == 0
            || !config
                .hidden_size
                .is_multiple_of(config.num_attention_heads)
        {
            return Err(Error::config(
                &cfg_path,
                "num_attention_heads",
                "must divide hidden_size",
            ));
        }
        Loader::load_component(ctx, dir, &["model", "pytorch_model"], true, |l| {
            Self::new(l, &config, activation)
        })
    }

    /// Builds the model from any loader (e.g. synthetic weights for benchmarks).
    pub fn from_loader(l: &Loader<'_>, c: &Config) -> Result<Self> {
        let activation = c.activation(Path::new("<config>"))?;
        Self::new(l, c, activation)
    }

    /// CLIP ViT-L/14's text tower with projection, as aMUSEd uses it.
    pub fn clip_l_config() -> Config {
        Config {
            vocab_size: 49408,
            hidden_size: 768,
            intermediate_size: 3072,
            projection_dim: 768,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            max_position_embeddings: 77,
            hidden_act: "quick_gelu".into(),
            layer_norm_eps: 1e-5,
            eos_token_id: 49407,
        }
    }

    fn new(l: &Loader<'_>, c: &Config, activation: UnaryOp) -> Result<Self> {
        let t = l.pp("text_model");
        let d = c.hidden_size;
        Ok(Self {
            config: c.clone(),
            token_embedding: t.table("embeddings.token_embedding.weight", &[c.vocab_size, d])?,
            position_embedding: t.tensor(
                "embeddings.position_embedding.weight",
                &[c.max_position_embeddings, d],
            )?,
            layers: (0..c.num_hidden_layers)
                .map(|i| EncoderLayer::new(&t.pp("encoder.layers").pp(i), c))
                .collect::<Result<_>>()?,
            final_layer_norm: Norm::layer(
                &t.pp("final_layer_norm"),
                d,
                c.layer_norm_eps,
                true,
                true,
            )?,
            text_projection: Linear::new(&l.pp("text_projection"), d, c.projection_dim, false)?,
            activation,
        })
    }

    /// Position of the pooled token in each row: the first `eos_token_id`, or (legacy configs
    /// with eos_token_id 2) the largest id.
    fn eos_positions(&self, ids: &[u32], len: usize) -> Vec<u32> {
        ids.chunks(len)
            .map(|row| {
                let pos = if self.config.eos_token_id == 2 {
                    row.iter()
                        .enumerate()
                        .max_by_key(|&(i, &v)| (v, std::cmp::Reverse(i)))
                        .map(|(i, _)| i)
                } else {
                    row.iter().position(|&v| v == self.config.eos_token_id)
                };
                pos.unwrap_or(0) as u32
            })
            .collect()
    }

    /// Encodes `batch` rows of token ids (each `ids.len() / batch` long).
    pub fn forward(
        &self,
        rec: &mut Recorder<'_>,
        ids: &[u32],
        batch: usize,
    ) -> Result<TextEmbeddings> {
        let c = &self.config;
        if batch == 0 || !ids.len().is_multiple_of(batch) {
            return Err(Error::shape(
                "clip_text",
                format!("{} ids do not split into {batch} rows", ids.len()),
            ));
        }
        let len = ids.len() / batch;
        if len > c.max_position_embeddings {
            return Err(Error::shape(
                "clip_text",
                format!(
                    "{len} tokens exceed max_position_embeddings {}",
                    c.max_position_embeddings
                ),
            ));
        }
        ops::embed::check_ids("input_ids", ids, c.vocab_size)?;
        let ctx = rec.ctx();
        let tids = Tensor::from_u32(ctx, "input_ids", &[batch, len], ids)?;
        let tok = ops::embed::embedding_table(rec, &tids, &self.token_embedding)?;
        let pos = if len == c.max_position_embeddings {
            self.position_embedding.clone()
        } else {
            ops::layout::slice(rec, &self.position_embedding, 0, 0, len)?
        };
        let mut x = ops::elementwise::add(rec, &tok, &pos)?;
        let spec = AttentionSpec::new(c.num_attention_heads, c.hidden_size / c.num_attention_heads)
            .causal();
        let mut penultimate = x.clone();
        let n = self.layers.len();
        for (i, layer) in self.layers.iter().enumerate() {
            if i + 1 == n {
                penultimate = x.clone();
            }
            x = layer.forward(rec, &x, &spec, self.activation)?;
            // The layer's intermediates go back to the pool for the next layer.
            rec.flush();
        }
        let last = self.final_layer_norm.forward(rec, &x)?;
        let rows: Vec<u32> = self
            .eos_positions(ids, len)
            .iter()
            .enumerate()
            .map(|(b, &p)| (b * len) as u32 + p)
            .collect();
        let trows = Tensor::from_u32(ctx, "eos_rows", &[batch], &rows)?;
        let flat = last.reshape(&[batch * len, c.hidden_size])?;
        let eos = ops::embed::embedding(rec, &trows, &flat)?;
        let pooled = self.text_projection.forward(rec, &eos)?;
        debug_assert_eq!(pooled.dtype(), DType::F32);
        Ok(TextEmbeddings {
            pooled,
            penultimate,
        })
    }
}
