//! MaskGIT's and aMUSEd's step: keep what was sampled at the masked positions, then mask again
//! the least confident of them (log-probability plus temperature-scaled Gumbel noise) down to
//! the schedule's count. References: diffusers `AmusedScheduler.step` (aMUSEd) and MaskGIT's
//! `mask_by_random_topk` in `maskgit/libml/parallel_decode.py`.

use rand::RngExt;
use rand_chacha::ChaCha8Rng;

use super::{SamplerKind, StepInput, StepOutcome, linspace};

/// Gumbel(0, 1) from a uniform, with aMUSEd's clamps.
fn gumbel(u: f32) -> f32 {
    -(-(u.max(1e-20)).ln()).max(1e-20).ln()
}

/// The `mask_len` lowest noisy confidences of one sample: positions with noisy confidence
/// strictly below the `mask_len`-th smallest (so infinitely confident positions never qualify).
fn lowest(noisy: &[f32], mask_len: usize) -> Vec<bool> {
    let mut sorted = noisy.to_vec();
    sorted.sort_by(f32::total_cmp);
    let cutoff = sorted[mask_len.min(sorted.len() - 1)];
    noisy.iter().map(|&v| v < cutoff).collect()
}

/// One re-masking step. `n0[b]`: the unknown count of image `b` before the first step
/// (MaskGIT's schedule counts from it; aMUSEd's from the whole grid times
/// `starting_mask_ratio`). Draws one Gumbel uniform per position from `rngs[b]`, every step.
pub(super) fn step(inp: &StepInput<'_>, n0: &[usize], rngs: &mut [ChaCha8Rng]) -> StepOutcome {
    let StepInput {
        opts,
        step,
        batch,
        l,
        mask,
        cur,
        ids,
        probs,
    } = *inp;
    let last = inp.is_last();
    let was_masked: Vec<bool> = cur.iter().map(|&t| t == mask).collect();
    let sampled: Vec<u32> = (0..batch * l)
        .map(|i| if was_masked[i] { ids[i] } else { cur[i] })
        .collect();
    let r = (step + 1) as f64 / opts.steps as f64;
    let gumbels: Vec<f32> = (0..batch * l)
        .map(|i| gumbel(rngs[i / l].random::<f32>()))
        .collect();
    // The last step keeps every sample: aMUSEd does not re-mask there, and MaskGIT returns
    // its samples from before the re-masking.
    let mut next = sampled.clone();
    if !last {
        for b in 0..batch {
            let range = b * l..(b + 1) * l;
            let unknown = was_masked[range.clone()].iter().filter(|m| **m).count();
            let (target, tau) = match opts.kind {
                SamplerKind::MaskGit => (
                    (n0[b] as f64 * opts.schedule.mask_ratio(r, n0[b])).floor(),
                    opts.choice_temperature.0 * (1.0 - r as f32),
                ),
                _ => (
                    (l as f64 * opts.schedule.mask_ratio(r, l) * opts.starting_mask_ratio).floor(),
                    linspace(
                        opts.choice_temperature.0,
                        opts.choice_temperature.1,
                        opts.steps,
                        step,
                    ),
                ),
            };
            let mask_len = (target as i64).min(unknown as i64 - 1).max(1) as usize;
            let noisy: Vec<f32> = range
                .clone()
                .map(|i| {
                    let conf = if was_masked[i] {
                        probs[i]
                    } else {
                        f32::INFINITY
                    };
                    conf.max(1e-20).ln() + tau * gumbels[i]
                })
                .collect();
            for (j, m) in lowest(&noisy, mask_len).into_iter().enumerate() {
                if m {
                    next[b * l + j] = mask;
                }
            }
        }
    }
    let newly_fixed = (0..batch * l)
        .map(|i| was_masked[i] && (next[i] != mask || last))
        .collect();
    StepOutcome {
        next,
        predicted: sampled,
        newly_fixed,
    }
}
