//! How the classifier-free guidance scale varies over the decoding steps.

use std::f32::consts::FRAC_PI_2;

use super::Step;

/// The guidance scale's course over the steps, in the `uncond + s·(cond − uncond)` form.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum GuidanceSchedule {
    /// `s` at every step (diffusers, Paella's defaults).
    #[default]
    Constant,
    /// Muse's ramp: `1 + (s − 1)·i/(n − 1)`, the conditional model alone at the first step
    /// and full guidance at the last (early tokens sampled with little guidance).
    Linear,
    /// open-muse's `generate2(guidance_schedule="cosine")`: `⌊s·cos(π/2·(1 − (i + 1)/n))⌋`.
    Cosine,
    /// Paella's `sampling_conditional_steps`: `s` for the first N steps, the conditional
    /// model alone after.
    First(usize),
}

impl GuidanceSchedule {
    /// The scale at `step` for the run's scale `s`.
    pub fn scale(self, s: f32, step: Step) -> f32 {
        let n = step.steps.max(1);
        match self {
            GuidanceSchedule::Constant => s,
            GuidanceSchedule::Linear if n == 1 => s,
            GuidanceSchedule::Linear => 1.0 + (s - 1.0) * step.index as f32 / (n - 1) as f32,
            GuidanceSchedule::Cosine => {
                (s * (FRAC_PI_2 * (1.0 - (step.index + 1) as f32 / n as f32)).cos()).floor()
            }
            GuidanceSchedule::First(k) if step.index < k => s,
            GuidanceSchedule::First(_) => 1.0,
        }
    }
}

impl std::str::FromStr for GuidanceSchedule {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("unknown guidance schedule {s:?} (constant, linear, cosine, first:N)");
        match s.to_ascii_lowercase().as_str() {
            "constant" => Ok(GuidanceSchedule::Constant),
            "linear" => Ok(GuidanceSchedule::Linear),
            "cosine" => Ok(GuidanceSchedule::Cosine),
            other => {
                let n = other.strip_prefix("first:").ok_or_else(bad)?;
                n.parse().map(GuidanceSchedule::First).map_err(|_| bad())
            }
        }
    }
}

impl std::fmt::Display for GuidanceSchedule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GuidanceSchedule::Constant => f.write_str("constant"),
            GuidanceSchedule::Linear => f.write_str("linear"),
            GuidanceSchedule::Cosine => f.write_str("cosine"),
            GuidanceSchedule::First(n) => write!(f, "first:{n}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(g: GuidanceSchedule, s: f32, n: usize) -> Vec<f32> {
        (0..n)
            .map(|index| g.scale(s, Step { index, steps: n }))
            .collect()
    }

    #[test]
    fn schedules_follow_their_references() {
        assert_eq!(at(GuidanceSchedule::Constant, 8.0, 3), [8.0; 3]);
        assert_eq!(
            at(GuidanceSchedule::Linear, 5.0, 5),
            [1.0, 2.0, 3.0, 4.0, 5.0]
        );
        // open-muse: floor(s·cos(π/2·(1 − (k+1)/n))) for n = 4, s = 10: cos of 3π/8, π/4,
        // π/8, 0.
        assert_eq!(at(GuidanceSchedule::Cosine, 10.0, 4), [3.0, 7.0, 9.0, 10.0]);
        assert_eq!(at(GuidanceSchedule::First(2), 6.0, 4), [6.0, 6.0, 1.0, 1.0]);
        for text in ["constant", "linear", "cosine", "first:3"] {
            let g: GuidanceSchedule = text.parse().expect("parses");
            assert_eq!(g.to_string(), text);
        }
        assert!("first:x".parse::<GuidanceSchedule>().is_err());
        assert!("ramp".parse::<GuidanceSchedule>().is_err());
    }
}
