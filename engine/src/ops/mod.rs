//! One module per kernel family. Each public function checks shapes and dtypes, allocates its
//! output from the pool, computes the dispatch and records it; nothing runs until the
//! [`Recorder`](crate::gpu::Recorder) is submitted.

pub mod attention;
pub(crate) mod chunked;
pub mod conv;
pub mod elementwise;
pub mod embed;
pub mod layout;
pub mod matmul;
pub mod norm;
pub mod sampling;

use crate::error::{Error, Result};
use crate::gpu::{Recorder, Tensor, linear_workgroups};

/// What a cooperative-matrix kernel needs, for [`Error::MissingFeature`](crate::Error).
pub(crate) const COOP_FEATURE: &str = "EXPERIMENTAL_COOPERATIVE_MATRIX with square f16 fragments \
     and subgroups of a width the kernels are compiled for (16×16 with 32 or 64, 8×8 with 8, 16 \
     or 32)";

/// The strategy an environment variable `var` names among `all` (by its `Debug` name, any case;
/// empty or unset: none), for the benchmarking overrides `TESSERA_MATMUL`, `TESSERA_CONV` and
/// `TESSERA_ATTENTION`. A name that matches none is logged and ignored.
pub(crate) fn strategy_from_env<S: Copy + std::fmt::Debug>(var: &str, all: &[S]) -> Option<S> {
    let v = std::env::var(var).ok().filter(|v| !v.is_empty())?;
    let s = all
        .iter()
        .copied()
        .find(|s| format!("{s:?}").eq_ignore_ascii_case(&v));
    if s.is_none() {
        log::warn!("{var}={v:?} names no strategy ({all:?}); ignored");
    }
    s
}

/// Invocations per workgroup of the one-thread-per-element kernels.
pub(crate) const WG: u32 = 256;

/// Workgroups for `n` independent items of `per_group` each, split over x/y when needed.
pub(crate) fn groups_for(rec: &Recorder<'_>, n: usize, per_group: u32) -> Result<[u32; 3]> {
    let groups = u32::try_from(n.div_ceil(per_group as usize)).map_err(|_| Error::OverLimit {
        name: format!("{n} elements in one dispatch"),
        bytes: n as u64,
        limit_name: "u32 index range",
        limit: u64::from(u32::MAX),
    })?;
    let max = rec.ctx().limits().max_compute_workgroups_per_dimension;
    let wg = linear_workgroups(groups, max);
    if wg[1] > max {
        return Err(Error::OverLimit {
            name: format!("{n} elements in one dispatch"),
            bytes: n as u64,
            limit_name: "max_compute_workgroups_per_dimension²",
            limit: u64::from(max) * u64::from(max),
        });
    }
    Ok(wg)
}

/// `usize` → `u32` for shader parameters, naming the op and quantity on overflow.
pub(crate) fn to_u32(op: &'static str, what: &str, v: usize) -> Result<u32> {
    u32::try_from(v).map_err(|_| Error::shape(op, format!("{what} = {v} exceeds u32")))
}

pub(crate) fn expect_rank(op: &'static str, t: &Tensor, ranks: &[usize]) -> Result<()> {
    if !ranks.contains(&t.shape().len()) {
        return Err(Error::shape(
            op,
            format!(
                "tensor {:?} has shape {:?}, expected rank {ranks:?}",
                t.name(),
                t.shape()
            ),
        ));
    }
    Ok(())
}

pub(crate) fn expect_shape(op: &'static str, t: &Tensor, shape: &[usize]) -> Result<()> {
    if t.shape() != shape {
        return Err(Error::shape(
            op,
            format!(
                "tensor {:?} has shape {:?}, expected {shape:?}",
                t.name(),
                t.shape()
            ),
        ));
    }
    Ok(())
}
