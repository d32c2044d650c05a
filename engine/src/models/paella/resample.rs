//! The k4 s2 p1 convolution between levels (down) and its transposed form (up), as Paella v1's
//! generator and v3's VQGAN use them, applied to channels-last activations (NCHW between two
//! permutes).

use crate::error::{Error, Result};
use crate::gpu::{Recorder, Tensor};
use crate::io::Loader;
use crate::ops;
use crate::ops::conv::Conv2dSpec;

/// `nn.Conv2d(cin, cout, 4, 2, 1)` or `nn.ConvTranspose2d(cin, cout, 4, 2, 1)`.
pub(super) struct Resample {
    weight: Tensor,
    bias: Tensor,
    transposed: bool,
}

impl Resample {
    /// Weight `[cout, cin, 4, 4]` (`[cin, cout, 4, 4]` transposed) and bias `[cout]` under `l`.
    pub(super) fn new(l: &Loader<'_>, cin: usize, cout: usize, transposed: bool) -> Result<Self> {
        let shape = if transposed {
            [cin, cout, 4, 4]
        } else {
            [cout, cin, 4, 4]
        };
        Ok(Self {
            weight: l.tensor("weight", &shape)?,
            bias: l.tensor("bias", &[cout])?,
            transposed,
        })
    }

    /// `[B, H, W, cin]` → `[B, H/2, W/2, cout]` (down) or `[B, 2H, 2W, cout]` (up).
    pub(super) fn forward(&self, rec: &mut Recorder<'_>, x: &Tensor) -> Result<Tensor> {
        if x.shape().len() != 4 {
            return Err(Error::shape(
                "resample",
                format!("{:?} is not NHWC", x.shape()),
            ));
        }
        let y = ops::layout::permute(rec, x, &[0, 3, 1, 2])?;
        let y = if self.transposed {
            ops::conv::conv_transpose2d(rec, &y, &self.weight, Some(&self.bias), 2, 1)?
        } else {
            let s = Conv2dSpec {
                stride: [2, 2],
                ..Conv2dSpec::same(1)
            };
            ops::conv::conv2d(rec, &y, &self.weight, Some(&self.bias), &s)?
        };
        ops::layout::permute(rec, &y, &[0, 2, 3, 1])
    }
}
