//! Layers shared by the models, named as in PyTorch (`weight`, `bias`, `to_q` …).

use crate::error::Result;
use crate::gpu::{Recorder, Tensor};
use crate::io::Loader;
use crate::ops;
use crate::ops::attention::{AttentionSpec, Columns};
use crate::ops::matmul::{Activation, Epilogue};
use crate::ops::norm::NormSpec;

/// `nn.Linear` (weight `[out, in]`, optional bias `[out]`).
pub struct Linear {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
}

impl Linear {
    pub fn new(l: &Loader<'_>, in_dim: usize, out_dim: usize, bias: bool) -> Result<Self> {
        Ok(Self {
            weight: l.matrix("weight", &[out_dim, in_dim])?,
            bias: if bias {
                Some(l.tensor("bias", &[out_dim])?)
            } else {
                None
            },
        })
    }

    /// A 1×1 `nn.Conv2d` (weight `[out, in, 1, 1]`) used as a linear layer on channels-last data.
    pub fn conv1x1(l: &Loader<'_>, in_dim: usize, out_dim: usize, bias: bool) -> Result<Self> {
        Ok(Self {
            weight: l
                .matrix("weight", &[out_dim, in_dim, 1, 1])?
                .reshape(&[out_dim, in_dim])?,
            bias: if bias {
                Some(l.tensor("bias", &[out_dim])?)
            } else {
                None
            },
        })
    }

    /// Linear layers `names` (each `[out_dim, in_dim]`) stacked by rows into one
    /// `[names.len()·out_dim, in_dim]` layer.
    pub fn stacked(
        l: &Loader<'_>,
        names: &[&str],
        in_dim: usize,
        out_dim: usize,
        bias: bool,
    ) -> Result<Self> {
        let weights: Vec<String> = names.iter().map(|n| format!("{n}.weight")).collect();
        let biases: Vec<String> = names.iter().map(|n| format!("{n}.bias")).collect();
        fn refs(v: &[String]) -> Vec<&str> {
            v.iter().map(String::as_str).collect()
        }
        let w_shape = [out_dim, in_dim];
        let b_shape = [out_dim];
        Ok(Self {
            weight: l.stacked(&refs(&weights), &vec![&w_shape[..]; names.len()], true)?,
            bias: if bias {
                Some(l.stacked(&refs(&biases), &vec![&b_shape[..]; names.len()], false)?)
            } else {
                None
            },
        })
    }

    pub fn forward(&self, rec: &mut Recorder<'_>, x: &Tensor) -> Result<Tensor> {
        ops::matmul::linear(rec, x, &self.weight, self.bias.as_ref())
    }

    /// `x·Wᵀ + b + residual` in one dispatch (`residual` shaped like the output).
    pub fn forward_residual(
        &self,
        rec: &mut Recorder<'_>,
        x: &Tensor,
        residual: Option<&Tensor>,
    ) -> Result<Tensor> {
        self.forward_fused(rec, x, None, residual)
    }

    /// `act(x·Wᵀ + b) + residual` in one dispatch.
    pub fn forward_fused(
        &self,
        rec: &mut Recorder<'_>,
        x: &Tensor,
        activation: Option<Activation>,
        residual: Option<&Tensor>,
    ) -> Result<Tensor> {
        self.fused(rec, x, activation, residual, false)
    }

    /// A gated unit (diffusers `GEGLU` with GELU): this layer's output halves are value and
    /// gate, and the result `value · act(gate)` `[.., out_dim / 2]` comes from one dispatch.
    pub fn forward_gated(
        &self,
        rec: &mut Recorder<'_>,
        x: &Tensor,
        activation: Activation,
    ) -> Result<Tensor> {
        self.fused(rec, x, Some(activation), None, true)
    }

    fn fused(
        &self,
        rec: &mut Recorder<'_>,
        x: &Tensor,
        activation: Option<Activation>,
        residual: Option<&Tensor>,
        gated: bool,
    ) -> Result<Tensor> {
        let epilogue = Epilogue {
            bias: self.bias.as_ref(),
            activation,
            residual,
            gated,
        };
        ops::matmul::linear_fused(rec, x, &self.weight, &epilogue)
    }
}

/// LayerNorm / RMSNorm over the last dim with optional affine terms.
pub struct Norm {
    pub weight: Option<Tensor>,
    pub bias: Option<Tensor>,
    pub eps: f32,
    pub subtract_mean: bool,
}

impl Norm {
    /// diffusers `RMSNorm(dim, eps, elementwise_affine)`.
    pub fn rms(l: &Loader<'_>, dim: usize, eps: f32, affine: bool) -> Result<Self> {
        Ok(Self {
            weight: if affine {
                Some(l.tensor("weight", &[dim])?)
            } else {
                None
            },
            bias: None,
            eps,
            subtract_mean: false,
        })
    }

    /// `nn.LayerNorm(dim, eps, elementwise_affine, bias)`.
    pub fn layer(l: &Loader<'_>, dim: usize, eps: f32, affine: bool, bias: bool) -> Result<Self> {
        Ok(Self {
            weight: if affine {
                Some(l.tensor("weight", &[dim])?)
            } else {
                None
            },
            bias: if affine && bias {
                Some(l.tensor("bias", &[dim])?)
            } else {
                None
            },
            eps,
            subtract_mean: true,
        })
    }

    fn spec(&self) -> NormSpec<'_> {
        NormSpec {
            weight: self.weight.as_ref(),
            bias: self.bias.as_ref(),
            eps: self.eps,
            subtract_mean: self.subtract_mean,
        }
    }

    pub fn forward(&self, rec: &mut Recorder<'_>, x: &Tensor) -> Result<Tensor> {
        ops::norm::layer_norm(rec, x, &self.spec())
    }

    /// The norm followed by adaptive modulation `·(1 + scale) + shift`, `emb` `[B, 2C]` =
    /// `[scale | shift]`, in one dispatch.
    pub fn forward_modulated(
        &self,
        rec: &mut Recorder<'_>,
        x: &Tensor,
        emb: &Tensor,
    ) -> Result<Tensor> {
        ops::norm::layer_norm_modulated(rec, x, &self.spec(), emb)
    }

    /// Normalises the channel dim of an NCHW tensor.
    pub fn forward_channels(&self, rec: &mut Recorder<'_>, x: &Tensor) -> Result<Tensor> {
        ops::norm::layer_norm_channels(rec, x, &self.spec())
    }
}

/// diffusers `Attention` (to_q, to_k, to_v, to_out.0): multi-head attention of `x` over itself
/// or over a context, with the projections stacked so that each is one matmul.
pub struct Attention {
    pub projections: Projections,
    pub to_out: Linear,
    pub heads: usize,
    pub head_dim: usize,
}

/// The input projections of an [`Attention`].
pub enum Projections {
    /// `to_q | to_k | to_v` stacked by rows: `[3·inner, dim]`, one matmul per call.
    SelfAttention { to_qkv: Linear },
    /// `to_q` `[inner, query_dim]` on the queries, `to_k | to_v` stacked `[2·inner,
    /// context_dim]` on the context (step-invariant in the samplers: computed once per image).
    Cross { to_q: Linear, to_kv: Linear },
}

impl Attention {
    /// Self-attention over `dim`-wide tokens.
    pub fn self_attention(
        l: &Loader<'_>,
        dim: usize,
        heads: usize,
        head_dim: usize,
        bias: bool,
        out_bias: bool,
    ) -> Result<Self> {
        let inner = heads * head_dim;
        Ok(Self {
            projections: Projections::SelfAttention {
                to_qkv: Linear::stacked(l, &["to_q", "to_k", "to_v"], dim, inner, bias)?,
            },
            to_out: Linear::new(&l.pp("to_out.0"), inner, dim, out_bias)?,
            heads,
            head_dim,
        })
    }

    /// Cross-attention of `query_dim`-wide tokens over a `context_dim`-wide context.
    pub fn cross_attention(
        l: &Loader<'_>,
        query_dim: usize,
        context_dim: usize,
        heads: usize,
        head_dim: usize,
        bias: bool,
        out_bias: bool,
    ) -> Result<Self> {
        let inner = heads * head_dim;
        Ok(Self {
            projections: Projections::Cross {
                to_q: Linear::new(&l.pp("to_q"), query_dim, inner, bias)?,
                to_kv: Linear::stacked(l, &["to_k", "to_v"], context_dim, inner, bias)?,
            },
            to_out: Linear::new(&l.pp("to_out.0"), inner, query_dim, out_bias)?,
            heads,
            head_dim,
        })
    }

    /// Cross-attention's keys and values of `context` `[B, Lk, context_dim]`:
    /// `[B, Lk, 2·inner]` (K in the first `inner` columns). Self-attention has none: error.
    pub fn project_context(&self, rec: &mut Recorder<'_>, context: &Tensor) -> Result<Tensor> {
        match &self.projections {
            Projections::Cross { to_kv, .. } => to_kv.forward(rec, context),
            Projections::SelfAttention { .. } => Err(crate::Error::shape(
                "attention",
                "a self-attention has no context to project",
            )),
        }
    }

    /// `to_out(attention(x)) + residual` for x `[B, L, query_dim]`. Cross-attention reads the
    /// context's keys and values from `kv` ([`Attention::project_context`]).
    pub fn forward(
        &self,
        rec: &mut Recorder<'_>,
        x: &Tensor,
        kv: Option<&Tensor>,
        residual: Option<&Tensor>,
    ) -> Result<Tensor> {
        let inner = self.heads * self.head_dim;
        let spec = AttentionSpec::new(self.heads, self.head_dim);
        let col = |tensor, offset| Columns { tensor, offset };
        let o = match (&self.projections, kv) {
            (Projections::SelfAttention { to_qkv }, None) => {
                let qkv = to_qkv.forward(rec, x)?;
                ops::attention::attention(
                    rec,
                    col(&qkv, 0),
                    col(&qkv, inner),
                    col(&qkv, 2 * inner),
                    &spec,
                )?
            }
            (Projections::Cross { to_q, .. }, Some(kv)) => {
                let q = to_q.forward(rec, x)?;
                ops::attention::attention(rec, &q, col(kv, 0), col(kv, inner), &spec)?
            }
            _ => {
                return Err(crate::Error::shape(
                    "attention",
                    "keys and values are given for cross-attention and only for it",
                ));
            }
        };
        self.to_out.forward_residual(rec, &o, residual)
    }
}
