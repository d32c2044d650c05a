//! MaskGIT's bidirectional transformer (google-research/maskgit `nets/maskgit_transformer.py`):
//! a BERT-style post-LN encoder over `[class token] + image tokens` with an MLM head tied to the
//! word embeddings. Paper: Chang et al. 2022, MaskGIT, <https://arxiv.org/abs/2202.04200>.
//!
//! Every Dense layer has a bias, LayerNorm eps is 1e-12, the activation is tanh-approximated
//! GELU (`jax.nn.gelu`'s default). Struct fields mirror the Flax module paths
//! (`TransformerLayer_3/Attention_0/self_attention/query` is `transformer_layers[3].attention_0
//! .self_attention.to_q`).

use crate::error::{Error, Result};
use crate::gpu::{Recorder, Tensor};
use crate::io::flax::{FlaxFile, FlaxLoader};
use crate::models::nn::{Attention, Linear, Norm, Projections};
use crate::ops;
use crate::ops::matmul::Activation;

const LN_EPS: f32 = 1e-12;
const WORD_EMBEDDINGS: &str = "params/Embed_0/word_embeddings/embedding";
const POSITION_EMBEDDINGS: &str = "params/Embed_0/position_embeddings/embedding";
const LAYER: &str = "params/TransformerLayer_";

/// Sizes of a MaskGIT transformer, all read off its checkpoint's arrays.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub num_layers: usize,
    pub hidden_size: usize,
    pub num_heads: usize,
    pub head_dim: usize,
    pub intermediate_size: usize,
    /// codebook_size + num_classes + 1 (the mask token, the last row).
    pub vocab_size: usize,
    /// Sequence length: 1 class token + grid².
    pub max_positions: usize,
    /// Codes of the VQGAN the transformer was trained with (the first vocabulary rows).
    pub codebook_size: usize,
    pub num_classes: usize,
    /// Token grid side.
    pub grid: usize,
}

impl Config {
    /// The ImageNet-256 release (`maskgit_imagenet256_checkpoint`).
    pub fn imagenet_256() -> Self {
        Self {
            num_layers: 24,
            hidden_size: 768,
            num_heads: 16,
            head_dim: 48,
            intermediate_size: 3072,
            vocab_size: 2025,
            max_positions: 257,
            codebook_size: 1024,
            num_classes: 1000,
            grid: 16,
        }
    }

    /// Reads the sizes from `file`'s arrays; `codebook_size` comes from the tokenizer.
    pub fn infer(file: &FlaxFile, codebook_size: usize) -> Result<Self> {
        let bad = |key: &str, message: String| Error::config(file.source(), key, message);
        let missing = |e: Error| match e {
            Error::MissingTensor { name, file } => Error::file(
                &file,
                format!("{name} is missing: not a MaskGIT transformer checkpoint"),
            ),
            e => e,
        };
        let &[vocab_size, hidden_size] = file.shape_of_rank(WORD_EMBEDDINGS, 2).map_err(missing)?
        else {
            unreachable!("rank checked")
        };
        let &[max_positions, _] = file.shape_of_rank(POSITION_EMBEDDINGS, 2)? else {
            unreachable!("rank checked")
        };
        let layers = file.indices(LAYER);
        let num_layers = layers.last().map_or(0, |l| l + 1);
        if num_layers == 0 {
            return Err(bad(LAYER, "no transformer layers".into()));
        }
        let query = format!("{LAYER}0/Attention_0/self_attention/query/kernel");
        let &[_, num_heads, head_dim] = file.shape_of_rank(&query, 3)? else {
            unreachable!("rank checked")
        };
        let mlp = format!("{LAYER}0/Mlp_0/intermediate_output/kernel");
        let &[_, intermediate_size] = file.shape_of_rank(&mlp, 2)? else {
            unreachable!("rank checked")
        };
        if num_heads == 0 || head_dim == 0 {
            return Err(bad(&query, format!("{num_heads} heads × {head_dim}")));
        }
        if vocab_size < codebook_size + 2 {
            return Err(bad(
                WORD_EMBEDDINGS,
                format!(
                    "{vocab_size} rows leave no class token: MaskGIT's vocabulary is the \
                     tokenizer's {codebook_size} codes + classes + 1 mask token"
                ),
            ));
        }
        let grid = (max_positions.saturating_sub(1) as f64).sqrt().round() as usize;
        if grid == 0 || grid * grid + 1 != max_positions {
            return Err(bad(
                POSITION_EMBEDDINGS,
                format!("{max_positions} positions are not 1 class token + a square token grid"),
            ));
        }
        Ok(Self {
            num_layers,
            hidden_size,
            num_heads,
            head_dim,
            intermediate_size,
            vocab_size,
            max_positions,
            codebook_size,
            num_classes: vocab_size - codebook_size - 1,
            grid,
        })
    }

    /// The [MASK] id: the last vocabulary row (the official config's −1, wrapped by the
    /// embedding lookup).
    pub fn mask_id(&self) -> u32 {
        (self.vocab_size - 1) as u32
    }
}

/// Flax `nn.Dense`: kernel `[in, out]` (stored) → Linear weight `[out, in]`, with bias.
fn dense(l: &FlaxLoader<'_>, din: usize, dout: usize) -> Result<Linear> {
    Ok(Linear {
        weight: l.permuted("kernel", &[din, dout], &[1, 0])?,
        bias: Some(l.tensor("bias", &[dout])?),
    })
}

/// Flax `nn.LayerNorm` (scale, bias).
fn layer_norm(l: &FlaxLoader<'_>, dim: usize) -> Result<Norm> {
    Ok(Norm {
        weight: Some(l.tensor("scale", &[dim])?),
        bias: Some(l.tensor("bias", &[dim])?),
        eps: LN_EPS,
        subtract_mean: true,
    })
}

/// Flax `SelfAttention`: query/key/value `DenseGeneral` kernels `[hidden, heads, head_dim]` with
/// biases `[heads, head_dim]`, out kernel `[heads, head_dim, hidden]`.
fn self_attention(l: &FlaxLoader<'_>, c: &Config) -> Result<Attention> {
    let (d, h, hd) = (c.hidden_size, c.num_heads, c.head_dim);
    let qkv = ["query/kernel", "key/kernel", "value/kernel"];
    let qkv_bias = ["query/bias", "key/bias", "value/bias"];
    let out = l.pp("out");
    Ok(Attention {
        projections: Projections::SelfAttention {
            to_qkv: Linear {
                weight: l
                    .permuted_stacked(&qkv, &[d, h, hd], &[1, 2, 0])?
                    .reshape(&[3 * h * hd, d])?,
                bias: Some(
                    l.permuted_stacked(&qkv_bias, &[h, hd], &[0, 1])?
                        .reshape(&[3 * h * hd])?,
                ),
            },
        },
        to_out: Linear {
            weight: out
                .permuted("kernel", &[h, hd, d], &[2, 0, 1])?
                .reshape(&[d, h * hd])?,
            bias: Some(out.tensor("bias", &[d])?),
        },
        heads: h,
        head_dim: hd,
    })
}

/// `Embed_0`: word + learned absolute position embeddings, then LayerNorm.
struct Embed {
    word_embeddings: Tensor,
    position_embeddings: Tensor,
    embeddings_ln: Norm,
}

/// `TransformerLayer_i/Attention_0`: self-attention, residual, LayerNorm.
struct AttentionBlock {
    self_attention: Attention,
    attention_output_ln: Norm,
}

/// `TransformerLayer_i/Mlp_0`: Dense → GELU → Dense, residual, LayerNorm.
struct Mlp {
    intermediate_output: Linear,
    layer_output: Linear,
    layer_output_ln: Norm,
}

struct TransformerLayer {
    attention_0: AttentionBlock,
    mlp_0: Mlp,
}

impl TransformerLayer {
    fn new(l: &FlaxLoader<'_>, c: &Config) -> Result<Self> {
        let (d, m) = (c.hidden_size, c.intermediate_size);
        let a = l.pp("Attention_0");
        let mlp = l.pp("Mlp_0");
        Ok(Self {
            attention_0: AttentionBlock {
                self_attention: self_attention(&a.pp("self_attention"), c)?,
                attention_output_ln: layer_norm(&a.pp("attention_output_ln"), d)?,
            },
            mlp_0: Mlp {
                intermediate_output: dense(&mlp.pp("intermediate_output"), d, m)?,
                layer_output: dense(&mlp.pp("layer_output"), m, d)?,
                layer_output_ln: layer_norm(&mlp.pp("layer_output_ln"), d)?,
            },
        })
    }

    fn forward(&self, rec: &mut Recorder<'_>, x: &Tensor) -> Result<Tensor> {
        let a = &self.attention_0;
        let h = a.self_attention.forward(rec, x, None, Some(x))?;
        let x = a.attention_output_ln.forward(rec, &h)?;
        let m = &self.mlp_0;
        let h = m
            .intermediate_output
            .forward_fused(rec, &x, Some(Activation::GeluTanh), None)?;
        let h = m.layer_output.forward_residual(rec, &h, Some(&x))?;
        m.layer_output_ln.forward(rec, &h)
    }
}

/// `MlmLayer_0`: Dense → GELU → LayerNorm, then logits against the word embeddings + bias.
struct MlmLayer {
    mlm_dense: Linear,
    mlm_ln: Norm,
    mlm_bias: Tensor,
}

pub struct Transformer {
    pub config: Config,
    embed_0: Embed,
    transformer_layers: Vec<TransformerLayer>,
    mlm_layer_0: MlmLayer,
}

impl Transformer {
    /// Builds the model from a loader at the file's root (arrays under `params/`).
    pub fn new(l: &FlaxLoader<'_>, c: &Config) -> Result<Self> {
        let p = l.pp("params");
        let e = p.pp("Embed_0");
        let m = p.pp("MlmLayer_0");
        let d = c.hidden_size;
        Ok(Self {
            config: c.clone(),
            embed_0: Embed {
                word_embeddings: e.tensor("word_embeddings/embedding", &[c.vocab_size, d])?,
                position_embeddings: e
                    .tensor("position_embeddings/embedding", &[c.max_positions, d])?,
                embeddings_ln: layer_norm(&e.pp("embeddings_ln"), d)?,
            },
            transformer_layers: (0..c.num_layers)
                .map(|i| TransformerLayer::new(&p.pp(format!("TransformerLayer_{i}")), c))
                .collect::<Result<_>>()?,
            mlm_layer_0: MlmLayer {
                mlm_dense: dense(&m.pp("mlm_dense"), d, d)?,
                mlm_ln: layer_norm(&m.pp("mlm_ln"), d)?,
                mlm_bias: m.tensor("mlm_bias/bias", &[c.vocab_size])?,
            },
        })
    }

    /// Sequence ids u32 `[B, max_positions]` (class token first) → logits over the whole
    /// vocabulary `[B, max_positions, vocab_size]`.
    pub fn forward(&self, rec: &mut Recorder<'_>, ids: &Tensor) -> Result<Tensor> {
        let c = &self.config;
        match *ids.shape() {
            [_, len] if len == c.max_positions => {}
            _ => {
                return Err(Error::shape(
                    "MaskGIT transformer",
                    format!(
                        "ids {:?} are not [B, {}] (class token + {}×{} tokens)",
                        ids.shape(),
                        c.max_positions,
                        c.grid,
                        c.grid
                    ),
                ));
            }
        }
        let e = &self.embed_0;
        let x = ops::embed::embedding(rec, ids, &e.word_embeddings)?;
        let x = ops::elementwise::add(rec, &x, &e.position_embeddings)?;
        let mut x = e.embeddings_ln.forward(rec, &x)?;
        for layer in &self.transformer_layers {
            x = layer.forward(rec, &x)?;
            // The layer's intermediates go back to the pool for the next layer.
            rec.flush();
        }
        let m = &self.mlm_layer_0;
        let h = m
            .mlm_dense
            .forward_fused(rec, &x, Some(Activation::GeluTanh), None)?;
        let h = m.mlm_ln.forward(rec, &h)?;
        ops::matmul::linear(rec, &h, &e.word_embeddings, Some(&m.mlm_bias))
    }
}
