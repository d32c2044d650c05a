//! Mask schedules: the fraction of the initially unknown tokens still masked after a fraction
//! r ∈ [0, 1] of the decoding steps (MaskGIT `mask_schedule.py`), clipped to [1e-6, 1].

use std::fmt;
use std::str::FromStr;

/// A mask schedule γ(r).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Schedule {
    /// cos(π r / 2) — MaskGIT's and aMUSEd's default.
    Cosine,
    /// 1 − r (MaskGIT "uniform").
    Linear,
    /// 1 − r^p: square is p = 2, cubic p = 3, sqrt p = 0.5.
    Pow(f64),
    /// −log2(r) / log2(N), N the number of initially unknown tokens.
    Log,
    /// 1 − N^−(1−r).
    Exp,
}

impl Schedule {
    /// Every named schedule, for sweeps and UI lists.
    pub const NAMED: [(&'static str, Schedule); 7] = [
        ("cosine", Schedule::Cosine),
        ("linear", Schedule::Linear),
        ("square", Schedule::Pow(2.0)),
        ("cubic", Schedule::Pow(3.0)),
        ("sqrt", Schedule::Pow(0.5)),
        ("log", Schedule::Log),
        ("exp", Schedule::Exp),
    ];

    /// γ(r) for `total_unknown` initially unknown tokens, clipped to [1e-6, 1].
    pub fn mask_ratio(self, r: f64, total_unknown: usize) -> f64 {
        let n = (total_unknown.max(2)) as f64;
        let v = match self {
            Schedule::Cosine => (std::f64::consts::FRAC_PI_2 * r).cos(),
            Schedule::Linear => 1.0 - r,
            Schedule::Pow(p) => 1.0 - r.powf(p),
            Schedule::Log => -r.log2() / n.log2(),
            Schedule::Exp => 1.0 - n.powf(-(1.0 - r)),
        };
        v.clamp(1e-6, 1.0)
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Schedule::Cosine => f.write_str("cosine"),
            Schedule::Linear => f.write_str("linear"),
            Schedule::Pow(p) if *p == 2.0 => f.write_str("square"),
            Schedule::Pow(p) if *p == 3.0 => f.write_str("cubic"),
            Schedule::Pow(p) if *p == 0.5 => f.write_str("sqrt"),
            Schedule::Pow(p) => write!(f, "pow:{p}"),
            Schedule::Log => f.write_str("log"),
            Schedule::Exp => f.write_str("exp"),
        }
    }
}

impl FromStr for Schedule {
    type Err = String;

    /// Names as in [`Schedule::NAMED`], plus `uniform`, `pow:P` / `powP` for any P > 0.
    fn from_str(s: &str) -> Result<Self, String> {
        let lower = s.to_ascii_lowercase();
        if lower == "uniform" {
            return Ok(Schedule::Linear);
        }
        if let Some((_, sch)) = Self::NAMED.iter().find(|(n, _)| *n == lower) {
            return Ok(*sch);
        }
        if let Some(p) = lower
            .strip_prefix("pow:")
            .or_else(|| lower.strip_prefix("pow"))
        {
            return match p.parse::<f64>() {
                Ok(p) if p > 0.0 && p.is_finite() => Ok(Schedule::Pow(p)),
                _ => Err(format!(
                    "schedule {s:?}: the power must be a positive number"
                )),
            };
        }
        Err(format!(
            "unknown schedule {s:?} (cosine, linear, square, cubic, sqrt, pow:P, log, exp)"
        ))
    }
}
