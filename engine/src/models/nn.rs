//! Layers shared by the models, named as in PyTorch (`weight`, `bias`, `to_q` …).

use crate::error::Result;
use crate::gpu::{Recorder, Tensor};
use crate::io::Loader;
use crate::ops;
use crate::ops::attention::AttentionSpec;
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

    pub fn forward(&self, rec: &mut Recorder<'_>, x: &Tensor) -> Result<Tensor> {
        ops::matmul::linear(rec, x, &self.weight, self.bias.as_ref())
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

    /// Normalises the channel dim of an NCHW tensor.
    pub fn forward_channels(&self, rec: &mut Recorder<'_>, x: &Tensor) -> Result<Tensor> {
        ops::norm::layer_norm_channels(rec, x, &self.spec())
    }
}

/// diffusers `Attention` (to_q, to_k, to_v, to_out.0): multi-head attention of `x` over
/// `context` (self-attention when `context` is `x`).
pub struct Attention {
    pub to_q: Linear,
    pub to_k: Linear,
    pub to_v: Linear,
    pub to_out: Linear,
    pub heads: usize,
    pub head_dim: usize,
}

impl Attention {
    pub fn new(
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
            to_q: Linear::new(&l.pp("to_q"), query_dim, inner, bias)?,
            to_k: Linear::new(&l.pp("to_k"), context_dim, inner, bias)?,
            to_v: Linear::new(&l.pp("to_v"), context_dim, inner, bias)?,
            to_out: Linear::new(&l.pp("to_out.0"), inner, query_dim, out_bias)?,
            heads,
            head_dim,
        })
    }

    pub fn forward(&self, rec: &mut Recorder<'_>, x: &Tensor, context: &Tensor) -> Result<Tensor> {
        let q = self.to_q.forward(rec, x)?;
        let k = self.to_k.forward(rec, context)?;
        let v = self.to_v.forward(rec, context)?;
        let o = ops::attention::attention(
            rec,
            &q,
            &k,
            &v,
            &AttentionSpec::new(self.heads, self.head_dim),
        )?;
        self.to_out.forward(rec, &o)
    }
}
