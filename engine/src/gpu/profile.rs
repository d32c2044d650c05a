//! Per-kernel time breakdown: GPU timestamp queries around each dispatch when the adapter has
//! `TIMESTAMP_QUERY`, otherwise wall clock around a submission per dispatch.
//!
//! Profiling is off unless [`GpuContext::start_profile`] is called; while it is on, every
//! [`Recorder`](super::Recorder) gives each dispatch its own compute pass (timestamps) or its own
//! submission (wall clock), so whole-run timings taken meanwhile are inflated; the breakdown is
//! what it is for.

use std::collections::BTreeMap;

/// How kernel times were measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProfileClock {
    /// GPU timestamps written at the beginning and end of each dispatch's pass.
    GpuTimestamps,
    /// Host wall clock around a submit-and-wait of each dispatch (includes submission overhead).
    WallClock,
}

impl ProfileClock {
    pub fn name(self) -> &'static str {
        match self {
            ProfileClock::GpuTimestamps => "gpu-timestamps",
            ProfileClock::WallClock => "wall-clock",
        }
    }
}

/// Total time of one kernel (module::entry point) over everything profiled.
#[derive(Clone, Debug)]
pub struct OpTime {
    pub name: String,
    pub calls: u64,
    pub ms: f64,
}

/// A profile: kernels sorted by total time, longest first.
#[derive(Clone, Debug)]
pub struct Profile {
    pub clock: ProfileClock,
    pub ops: Vec<OpTime>,
}

impl Profile {
    pub fn total_ms(&self) -> f64 {
        self.ops.iter().map(|o| o.ms).sum()
    }
}

#[derive(Debug)]
pub(crate) struct ProfileState {
    pub(crate) clock: ProfileClock,
    totals: BTreeMap<String, (u64, f64)>,
}

impl ProfileState {
    pub(crate) fn new(clock: ProfileClock) -> Self {
        Self {
            clock,
            totals: BTreeMap::new(),
        }
    }

    pub(crate) fn add(&mut self, name: &str, ms: f64) {
        let e = self.totals.entry(name.to_owned()).or_insert((0, 0.0));
        e.0 += 1;
        e.1 += ms;
    }

    pub(crate) fn finish(self) -> Profile {
        let mut ops: Vec<OpTime> = self
            .totals
            .into_iter()
            .map(|(name, (calls, ms))| OpTime { name, calls, ms })
            .collect();
        ops.sort_by(|a, b| b.ms.total_cmp(&a.ms));
        Profile {
            clock: self.clock,
            ops,
        }
    }
}
