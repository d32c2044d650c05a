//! Paella's step: every unknown position takes its new sample, then goes back to its initial
//! random token with the probability of the next step's noise level (`TokenModel::noise_level`;
//! none after the last step). Reference: Paella's `sample` in `src/utils.py` (v3; v1's
//! `utils.py` with renoise mode "start"), re-noising to the same position's `init_noise` token.

use rand::RngExt;
use rand_chacha::ChaCha8Rng;

use super::{StepInput, StepOutcome};

/// The positions and tokens Paella keeps across steps.
pub(super) struct Renoise<'a> {
    /// Positions given by the caller (inpainting, outpainting): never sampled or re-noised.
    pub known: &'a [bool],
    /// The caller's tokens at the known positions.
    pub init: &'a [u32],
    /// Each position's initial random token, the one re-noising returns it to.
    pub noise: &'a [u32],
    /// Positions not re-noised in the previous step (updated here).
    pub settled: &'a mut [bool],
}

/// One re-noising step; `t_next` is the noise level when the next step begins. Draws one
/// uniform from `rngs[b]` per unknown position of image `b`, except at the last step.
pub(super) fn step(
    inp: &StepInput<'_>,
    state: &mut Renoise<'_>,
    t_next: f32,
    rngs: &mut [ChaCha8Rng],
) -> StepOutcome {
    let StepInput { batch, l, ids, .. } = *inp;
    let last = inp.is_last();
    let predicted: Vec<u32> = (0..batch * l)
        .map(|i| {
            if state.known[i] {
                state.init[i]
            } else {
                ids[i]
            }
        })
        .collect();
    let mut next = predicted.clone();
    let mut newly_fixed = vec![false; batch * l];
    for i in 0..batch * l {
        let renoise = !last && !state.known[i] && rngs[i / l].random::<f32>() < t_next;
        if renoise {
            next[i] = state.noise[i];
        }
        newly_fixed[i] = !renoise && !state.settled[i];
        state.settled[i] = !renoise;
    }
    StepOutcome {
        next,
        predicted,
        newly_fixed,
    }
}
