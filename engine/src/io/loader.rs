//! Builds model structs from a checkpoint: every tensor is first checked (presence, shape,
//! dtype) with nothing uploaded, then the same constructor runs again and uploads.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::fmt::Display;
use std::rc::Rc;

use super::checkpoint::{Checkpoint, Values};
use crate::error::Result;
use crate::gpu::{DType, GpuContext, Tensor};

/// Hands tensors to model constructors under a dotted path prefix (`vb.pp("layers").pp(3)`).
#[derive(Clone)]
pub struct Loader<'a> {
    ctx: &'a GpuContext,
    ckpt: &'a Checkpoint,
    prefix: String,
    check_only: bool,
    keep_f16: bool,
    used: Rc<RefCell<BTreeSet<String>>>,
}

impl<'a> Loader<'a> {
    /// Runs `build` once to check every tensor it asks for, then again to upload them.
    /// `keep_f16`: matrix weights stored as f16 stay f16 on the GPU (half the memory).
    /// Tensors in the checkpoint that `build` never asked for are logged.
    pub fn load<T>(
        ctx: &'a GpuContext,
        ckpt: &'a Checkpoint,
        keep_f16: bool,
        build: impl Fn(&Loader<'a>) -> Result<T>,
    ) -> Result<T> {
        let mut l = Loader {
            ctx,
            ckpt,
            prefix: String::new(),
            check_only: true,
            keep_f16,
            used: Rc::new(RefCell::new(BTreeSet::new())),
        };
        build(&l)?;
        l.check_only = false;
        let model = build(&l)?;
        let used = l.used.borrow();
        let unused: Vec<&str> = ckpt.names().filter(|n| !used.contains(*n)).collect();
        if !unused.is_empty() {
            log::warn!(
                "{}: {} tensors unused, e.g. {:?}",
                ckpt.describe(),
                unused.len(),
                &unused[..unused.len().min(5)]
            );
        }
        Ok(model)
    }

    /// Reads the safetensors weights of a component folder (`stems` as in
    /// [`component_files`](super::checkpoint::component_files)) and builds the model with
    /// [`Loader::load`].
    pub fn load_component<T>(
        ctx: &GpuContext,
        dir: &std::path::Path,
        stems: &[&str],
        keep_f16: bool,
        build: impl for<'b> Fn(&Loader<'b>) -> Result<T>,
    ) -> Result<T> {
        let ckpt = Checkpoint::open(&super::checkpoint::component_files(dir, stems)?)?;
        Loader::load(ctx, &ckpt, keep_f16, |l| build(l))
    }

    /// A loader one level down: `pp("attn1")` under `transformer_layers.3` reads
    /// `transformer_layers.3.attn1.*`.
    pub fn pp(&self, part: impl Display) -> Loader<'a> {
        let prefix = if self.prefix.is_empty() {
            part.to_string()
        } else {
            format!("{}.{part}", self.prefix)
        };
        Loader {
            prefix,
            used: Rc::clone(&self.used),
            ..*self
        }
    }

    pub fn ctx(&self) -> &'a GpuContext {
        self.ctx
    }

    /// True during the first pass of [`Loader::load`], when tensors are placeholders that
    /// must not be computed with.
    pub fn checking(&self) -> bool {
        self.check_only
    }

    fn path(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_owned()
        } else {
            format!("{}.{name}", self.prefix)
        }
    }

    /// True when the checkpoint holds `name` under this prefix.
    pub fn contains(&self, name: &str) -> bool {
        self.ckpt.contains(&self.path(name))
    }

    /// The full path of `name`, checked against `shape` and marked used.
    fn claim(&self, name: &str, shape: &[usize]) -> Result<String> {
        let path = self.path(name);
        self.ckpt.check(&path, shape)?;
        self.used.borrow_mut().insert(path.clone());
        Ok(path)
    }

    fn get(&self, name: &str, shape: &[usize], allow_f16: bool) -> Result<Tensor> {
        self.stacked(&[name], &[shape], allow_f16)
    }

    /// An f32 tensor of exactly `shape`.
    pub fn tensor(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        self.get(name, shape, false)
    }

    /// An embedding table `[vocab, C]`, split into row blocks when it is over the binding limit.
    pub fn table(&self, name: &str, shape: &[usize]) -> Result<crate::ops::embed::Table> {
        use crate::ops::embed::Table;
        let path = self.claim(name, shape)?;
        if self.check_only {
            return Table::whole(Tensor::placeholder(self.ctx, &path, shape, DType::F32)?);
        }
        let v = self.ckpt.values(&path, shape, false)?.into_f32();
        Table::from_f32(self.ctx, &path, shape, &v)
    }

    /// A matrix weight (matmul B operand): f16 in the file stays f16 when the loader keeps f16.
    pub fn matrix(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        self.get(name, shape, true)
    }

    /// Several tensors `[rows_i, ..]` (one for a plain tensor) with equal trailing dims, stacked along dim 0 into one
    /// `[Σ rows_i, ..]` tensor, so that e.g. the Q, K and V projections of an attention run as
    /// one matmul. `matrix`: f16 in the file stays f16 (as [`Loader::matrix`]) when every part
    /// is f16 and the loader keeps f16.
    pub fn stacked(&self, names: &[&str], shapes: &[&[usize]], matrix: bool) -> Result<Tensor> {
        let (Some(first), true) = (shapes.first(), names.len() == shapes.len()) else {
            return Err(crate::Error::shape(
                "load",
                "stacking needs one shape per tensor",
            ));
        };
        let paths = names
            .iter()
            .zip(shapes)
            .map(|(n, s)| self.claim(n, s))
            .collect::<Result<Vec<_>>>()?;
        let mut shape = first.to_vec();
        if shapes.len() > 1 {
            if let Some(bad) = shapes.iter().find(|s| s.is_empty() || s[1..] != first[1..]) {
                return Err(crate::Error::shape(
                    "load",
                    format!("cannot stack {paths:?}: shapes {first:?} and {bad:?}"),
                ));
            }
            shape[0] = shapes.iter().map(|s| s[0]).sum();
        }
        let label = paths.join("+");
        // Weights are bound whole: check the binding limit before anything is uploaded.
        let dtype = if matrix && self.keep_f16 {
            DType::F16
        } else {
            DType::F32
        };
        self.ctx
            .check_binding(&label, crate::gpu::byte_len(&shape, dtype))?;
        if self.check_only {
            return Tensor::placeholder(self.ctx, &label, &shape, DType::F32);
        }
        let parts = paths
            .iter()
            .zip(shapes)
            .map(|(p, s)| self.ckpt.values(p, s, matrix && self.keep_f16))
            .collect::<Result<Vec<_>>>()?;
        if parts.iter().all(|v| matches!(v, Values::F16(_))) {
            let halves = parts
                .into_iter()
                .map(|v| match v {
                    Values::F16(v) => v,
                    Values::F32(_) => Vec::new(),
                })
                .collect();
            let v = concat(halves);
            Tensor::upload_bytes(
                self.ctx,
                &label,
                &shape,
                DType::F16,
                bytemuck::cast_slice(&v),
            )
        } else {
            let v = concat(parts.into_iter().map(Values::into_f32).collect());
            Tensor::from_f32(self.ctx, &label, &shape, &v)
        }
    }

    /// The values of `name` (exactly `shape`) on the host, as f32, for weights that are
    /// folded or rearranged before upload (zeros while [`Self::checking`]).
    pub fn host(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let path = self.claim(name, shape)?;
        if self.check_only {
            return Ok(vec![0.0; shape.iter().product()]);
        }
        Ok(self.ckpt.values(&path, shape, false)?.into_f32())
    }

    /// `name` (exactly `shape`) with its dims reordered on the host (output dim i is input dim
    /// `perm[i]`) and uploaded as f32: e.g. a convolution kernel rearranged into a matmul
    /// operand.
    pub fn permuted(&self, name: &str, shape: &[usize], perm: &[usize]) -> Result<Tensor> {
        let out_shape: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
        let v = self.host(name, shape)?;
        let v = if self.check_only {
            v
        } else {
            permute_host(&v, shape, perm)
        };
        self.upload(name, &out_shape, &v)
    }

    /// Rows `start .. start + len` (dim 0) of `name` (exactly `shape`), uploaded as f32: one
    /// part of a packed weight (PyTorch `MultiheadAttention`'s `in_proj_weight`).
    pub fn rows(&self, name: &str, shape: &[usize], start: usize, len: usize) -> Result<Tensor> {
        let inner: usize = shape.iter().skip(1).product();
        let mut out_shape = shape.to_vec();
        out_shape[0] = len;
        if start + len > shape.first().copied().unwrap_or(0) {
            return Err(crate::Error::shape(
                "load",
                format!(
                    "rows {start}..{} of {} {shape:?}",
                    start + len,
                    self.path(name)
                ),
            ));
        }
        let v = self.host(name, shape)?;
        let end = (start + len) * inner;
        let part = if self.check_only {
            &[][..]
        } else {
            &v[start * inner..end]
        };
        self.upload(
            &format!("{name}[{start}..{}]", start + len),
            &out_shape,
            part,
        )
    }

    /// Values computed on the host from loaded ones (a folded norm, a tiled bias) as an f32
    /// tensor named `label` under this prefix (a placeholder while [`Self::checking`]).
    ///
    /// # Errors
    /// A value count unlike `shape`'s; GPU allocation failures.
    pub fn upload(&self, label: &str, shape: &[usize], values: &[f32]) -> Result<Tensor> {
        let name = self.path(label);
        if self.check_only {
            return Tensor::placeholder(self.ctx, &name, shape, DType::F32);
        }
        Tensor::from_f32(self.ctx, &name, shape, values)
    }

    /// Marks `name` as deliberately not loaded (a part of the checkpoint the engine does not
    /// run), so that it is not reported as unused.
    pub fn skip(&self, name: &str) {
        if self.contains(name) {
            self.used.borrow_mut().insert(self.path(name));
        }
    }

    /// `tensor` when present, `None` when the checkpoint lacks it.
    pub fn optional(&self, name: &str, shape: &[usize]) -> Result<Option<Tensor>> {
        if self.contains(name) {
            self.tensor(name, shape).map(Some)
        } else {
            Ok(None)
        }
    }
}

/// The parts one after another; a single part is moved, not copied (a weight can be large).
pub(crate) fn concat<T: Clone>(mut parts: Vec<Vec<T>>) -> Vec<T> {
    if parts.len() == 1 {
        return parts.pop().unwrap_or_default();
    }
    parts.concat()
}

/// `v` (row-major `shape`) with its dims reordered: output dim i is input dim `perm[i]`.
pub fn permute_host(v: &[f32], shape: &[usize], perm: &[usize]) -> Vec<f32> {
    let rank = shape.len();
    let mut in_strides = vec![1usize; rank];
    for i in (0..rank.saturating_sub(1)).rev() {
        in_strides[i] = in_strides[i + 1] * shape[i + 1];
    }
    let out_shape: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
    let strides: Vec<usize> = perm.iter().map(|&p| in_strides[p]).collect();
    let mut out = Vec::with_capacity(v.len());
    let mut idx = vec![0usize; rank];
    for _ in 0..v.len() {
        out.push(v[idx.iter().zip(&strides).map(|(i, s)| i * s).sum::<usize>()]);
        for d in (0..rank).rev() {
            idx[d] += 1;
            if idx[d] < out_shape[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    out
}
