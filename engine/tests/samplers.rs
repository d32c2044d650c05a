//! Samplers against their reference rules, driven by a stand-in model with fixed random logits:
//! schedule values, per-step mask counts (MaskGIT and aMUSEd formulas with their clamps),
//! known tokens kept, img2img masking, Paella re-noising, determinism by seed.

use std::ops::ControlFlow;
use std::sync::OnceLock;

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tessera_engine::sampling::{
    self, SamplerKind, SamplerOptions, Schedule, Step, StepEvent, TokenModel,
};
use tessera_engine::{Error, GpuContext, Recorder, Result, Tensor};

fn ctx() -> &'static GpuContext {
    static CTX: OnceLock<GpuContext> = OnceLock::new();
    CTX.get_or_init(|| {
        GpuContext::new().unwrap_or_else(|e| {
            panic!("GPU tests need a wgpu adapter: {e}\nOn Debian/Ubuntu: `apt-get install -y mesa-vulkan-drivers`")
        })
    })
}

/// Fixed random logits whatever the tokens.
struct Fixed {
    logits: Tensor,
    grid: (usize, usize),
    codes: usize,
    /// The sampler steps the model was asked at, in order.
    asked: std::cell::RefCell<Vec<Step>>,
}

impl Fixed {
    fn new(batch: usize, grid: (usize, usize), codes: usize, seed: u64) -> Self {
        let mut r = ChaCha8Rng::seed_from_u64(seed);
        let l = grid.0 * grid.1;
        let v: Vec<f32> = (0..batch * l * codes)
            .map(|_| r.random_range(-3.0f32..3.0))
            .collect();
        Self {
            logits: Tensor::from_f32(ctx(), "logits", &[batch, l, codes], &v).expect("upload"),
            grid,
            codes,
            asked: Default::default(),
        }
    }
}

impl TokenModel for Fixed {
    fn grid(&self) -> (usize, usize) {
        self.grid
    }
    fn codebook_size(&self) -> usize {
        self.codes
    }
    fn mask_id(&self) -> u32 {
        self.codes as u32
    }
    fn logits(&self, _: &mut Recorder<'_>, _: &Tensor, step: Step) -> Result<Tensor> {
        self.asked.borrow_mut().push(step);
        Ok(self.logits.clone())
    }
}

struct Trace {
    masked_after: Vec<usize>,
    fixed: Vec<usize>,
    tokens: Vec<Vec<u32>>,
}

fn run(model: &Fixed, batch: usize, init: &[u32], opts: &SamplerOptions) -> (Vec<u32>, Trace) {
    let mask = model.mask_id();
    let mut t = Trace {
        masked_after: vec![],
        fixed: vec![],
        tokens: vec![],
    };
    let out = sampling::generate(ctx(), model, batch, init, opts, &mut |e: &StepEvent<'_>| {
        t.masked_after
            .push(e.tokens.iter().filter(|&&x| x == mask).count());
        t.fixed.push(e.newly_fixed.iter().filter(|f| **f).count());
        t.tokens.push(e.tokens.to_vec());
        ControlFlow::Continue(())
    })
    .expect("generate");
    (out, t)
}

#[test]
fn schedule_values_at_known_points() {
    let n = 256;
    let close = |a: f64, b: f64| assert!((a - b).abs() < 1e-12, "{a} vs {b}");
    close(Schedule::Cosine.mask_ratio(0.0, n), 1.0);
    close(
        Schedule::Cosine.mask_ratio(0.5, n),
        std::f64::consts::FRAC_1_SQRT_2,
    );
    close(Schedule::Cosine.mask_ratio(1.0, n), 1e-6);
    close(Schedule::Linear.mask_ratio(0.25, n), 0.75);
    close(Schedule::Pow(2.0).mask_ratio(0.5, n), 0.75);
    close(Schedule::Pow(3.0).mask_ratio(0.5, n), 0.875);
    close(Schedule::Pow(0.5).mask_ratio(0.25, n), 0.5);
    close(Schedule::Log.mask_ratio(0.5, n), 1.0 / 8.0); // −log2(0.5)/log2(256)
    close(Schedule::Log.mask_ratio(0.0, n), 1.0); // −log2(0) = ∞, clipped
    close(Schedule::Exp.mask_ratio(0.5, n), 1.0 - 1.0 / 16.0); // 1 − 256^−0.5
    close(Schedule::Exp.mask_ratio(1.0, n), 1e-6);
    for (name, s) in Schedule::NAMED {
        assert_eq!(name.parse::<Schedule>(), Ok(s));
        assert_eq!(s.to_string(), name);
        for i in 0..=10 {
            let v = s.mask_ratio(f64::from(i) / 10.0, n);
            assert!((1e-6..=1.0).contains(&v), "{name} out of range");
        }
    }
    assert_eq!("pow:1.5".parse::<Schedule>(), Ok(Schedule::Pow(1.5)));
    assert_eq!("uniform".parse::<Schedule>(), Ok(Schedule::Linear));
    assert!("wobbly".parse::<Schedule>().is_err());
    assert!("pow:-1".parse::<Schedule>().is_err());
}

#[test]
fn amused_mask_counts_follow_the_scheduler_formula() {
    let (grid, codes) = ((8, 8), 50);
    let l = 64;
    for (name, sch) in Schedule::NAMED {
        for ratio in [1.0, 0.4] {
            let model = Fixed::new(1, grid, codes, 1);
            let mut opts = SamplerOptions::amused(3);
            opts.schedule = sch;
            opts.starting_mask_ratio = ratio;
            let init = vec![codes as u32; l];
            let (out, t) = run(&model, 1, &init, &opts);
            let mut unknown = l;
            for (i, &got) in t.masked_after.iter().enumerate() {
                let want = if i + 1 == opts.steps {
                    0
                } else {
                    let m = (l as f64 * sch.mask_ratio((i + 1) as f64 / 12.0, l) * ratio).floor()
                        as i64;
                    m.min(unknown as i64 - 1).max(1) as usize
                };
                assert_eq!(got, want, "{name} ratio {ratio} step {i}");
                unknown = got;
            }
            assert!(out.iter().all(|&x| (x as usize) < codes));
            assert_eq!(
                t.fixed.iter().sum::<usize>(),
                l,
                "{name}: every token fixed exactly once"
            );
        }
    }
}

#[test]
fn maskgit_mask_counts_use_initial_unknown_count() {
    let (grid, codes) = ((6, 7), 40);
    let l = 42;
    let mut r = ChaCha8Rng::seed_from_u64(9);
    // 30 of 42 unknown.
    let mut init: Vec<u32> = (0..l).map(|_| r.random_range(0..codes as u32)).collect();
    init[..30].fill(codes as u32);
    let model = Fixed::new(1, grid, codes, 2);
    for (name, sch) in Schedule::NAMED {
        let mut opts = SamplerOptions::maskgit(5);
        opts.schedule = sch;
        let (out, t) = run(&model, 1, &init, &opts);
        let n0 = 30usize;
        let mut unknown = n0;
        for (s, &got) in t.masked_after.iter().enumerate() {
            if s + 1 == opts.steps {
                assert_eq!(got, 0, "{name}: the result has no masks");
                break;
            }
            let m =
                (n0 as f64 * sch.mask_ratio((s + 1) as f64 / opts.steps as f64, n0)).floor() as i64;
            let want = m.min(unknown as i64 - 1).max(1) as usize;
            assert_eq!(got, want, "{name} step {s}");
            unknown = got;
        }
        for i in 30..l {
            assert_eq!(out[i], init[i], "{name}: known token {i} changed");
        }
    }
}

#[test]
fn known_tokens_never_change_in_any_sampler() {
    let (grid, codes) = ((5, 5), 20);
    let l = 25;
    let batch = 2;
    let mut r = ChaCha8Rng::seed_from_u64(4);
    let init: Vec<u32> = (0..batch * l)
        .map(|i| {
            if i % 3 == 0 {
                codes as u32
            } else {
                r.random_range(0..codes as u32)
            }
        })
        .collect();
    let model = Fixed::new(batch, grid, codes, 3);
    for kind in [
        SamplerKind::MaskGit,
        SamplerKind::Amused,
        SamplerKind::Paella,
    ] {
        let mut opts = SamplerOptions::amused(11);
        opts.kind = kind;
        opts.starting_mask_ratio = 9.0 / 25.0;
        let (out, t) = run(&model, batch, &init, &opts);
        for step in &t.tokens {
            for i in 0..batch * l {
                if init[i] != codes as u32 {
                    assert_eq!(step[i], init[i], "{kind}: known token {i} changed mid-run");
                }
            }
        }
        for i in 0..batch * l {
            if init[i] != codes as u32 {
                assert_eq!(out[i], init[i], "{kind}");
            } else {
                assert!(
                    (out[i] as usize) < codes,
                    "{kind}: position {i} left masked"
                );
            }
        }
    }
}

#[test]
fn img2img_small_strength_keeps_most_tokens() {
    let codes = 30u32;
    let tokens: Vec<u32> = (0..256).map(|i| i % codes).collect();
    let mut opts = SamplerOptions::amused(1);
    opts.steps = 12;
    let (masked, start) = sampling::img2img_start(&tokens, codes, &opts, 0.2).expect("start");
    assert_eq!(start, 12 - 2);
    let n = masked.iter().filter(|&&t| t == codes).count();
    // γ(10/12) = cos(5π/12) ≈ 0.259 of 256 ≈ 66 masked.
    assert!((40..=95).contains(&n), "{n} masked");
    assert!(
        masked
            .iter()
            .zip(&tokens)
            .all(|(m, t)| *m == codes || m == t)
    );
    let (all, start) = sampling::img2img_start(&tokens, codes, &opts, 1.0).expect("start");
    assert_eq!(start, 0);
    assert!(
        all.iter().all(|&t| t == codes),
        "strength 1 regenerates everything"
    );
    for (strength, why) in [(0.0, "zero"), (1.5, "above 1"), (0.05, "runs no step")] {
        assert!(
            matches!(
                sampling::img2img_start(&tokens, codes, &opts, strength),
                Err(Error::InvalidArgument { .. })
            ),
            "{why}"
        );
    }
}

#[test]
fn paella_renoises_with_probability_t_next_and_not_at_the_end() {
    let (grid, codes) = ((16, 16), 64);
    let batch = 4;
    let n = batch * 256;
    let model = Fixed::new(batch, grid, codes, 5);
    let opts = SamplerOptions::paella(21);
    // Per step: how many positions went back to their initial noise (state ≠ this step's sample).
    let mut renoised = Vec::new();
    let out = sampling::generate(
        ctx(),
        &model,
        batch,
        &vec![codes as u32; n],
        &opts,
        &mut |e| {
            renoised.push(
                e.tokens
                    .iter()
                    .zip(e.predicted)
                    .filter(|(a, b)| a != b)
                    .count(),
            );
            ControlFlow::Continue(())
        },
    )
    .expect("generate");
    assert!(out.iter().all(|&x| (x as usize) < codes));
    assert_eq!(renoised.len(), 12);
    assert_eq!(renoised[11], 0, "no re-noise on the last step");
    for (i, &got) in renoised[..11].iter().enumerate() {
        // Each position re-noises with probability t_{i+1}; a re-noised position is invisible
        // when the noise equals the sample (probability ≈ 1/64 here).
        let p = (1.0 - (i + 1) as f64 / 12.0) * (1.0 - 1.0 / 64.0);
        let want = n as f64 * p;
        let sigma = (n as f64 * p * (1.0 - p)).sqrt() + 2.0;
        assert!(
            (got as f64 - want).abs() <= 5.0 * sigma,
            "step {i}: {got} re-noised, want ≈ {want:.0}"
        );
    }
}

#[test]
fn same_seed_same_tokens_other_seed_other_tokens() {
    let model = Fixed::new(1, (8, 8), 50, 6);
    let init = vec![50u32; 64];
    for kind in [
        SamplerKind::MaskGit,
        SamplerKind::Amused,
        SamplerKind::Paella,
    ] {
        let mut a = SamplerOptions::amused(1234);
        a.kind = kind;
        let (x, _) = run(&model, 1, &init, &a);
        let (y, _) = run(&model, 1, &init, &a);
        assert_eq!(x, y, "{kind}: same seed");
        a.seed = 1235;
        let (z, _) = run(&model, 1, &init, &a);
        assert_ne!(x, z, "{kind}: another seed");
    }
}

#[test]
fn bad_options_are_errors() {
    let model = Fixed::new(1, (2, 2), 10, 7);
    let mut o = SamplerOptions::amused(1);
    o.steps = 0;
    assert!(matches!(
        sampling::generate(ctx(), &model, 1, &[10; 4], &o, &mut |_| {
            ControlFlow::Continue(())
        }),
        Err(Error::InvalidArgument { .. })
    ));
    let mut o = SamplerOptions::paella(4);
    o.softmax_temperature.1 = 0.0;
    assert!(
        matches!(
            sampling::generate(ctx(), &model, 1, &[1; 4], &o, &mut |_| {
                ControlFlow::Continue(())
            }),
            Err(Error::InvalidArgument { .. })
        ),
        "Paella temperature 0"
    );
    let o = SamplerOptions::amused(1);
    assert!(
        matches!(
            sampling::generate(ctx(), &model, 1, &[10; 3], &o, &mut |_| {
                ControlFlow::Continue(())
            }),
            Err(Error::Shape { .. })
        ),
        "wrong length"
    );
    assert!(
        matches!(
            sampling::generate(ctx(), &model, 1, &[10, 10, 10, 99], &o, &mut |_| {
                ControlFlow::Continue(())
            }),
            Err(Error::Shape { .. })
        ),
        "bad id"
    );
}

/// Logits that overflow (a guidance scale of 3.4e38 does this) leave no valid draw: every
/// sampler stops with an error naming the cause, instead of feeding leftover buffer contents
/// back as token ids.
#[test]
fn non_finite_logits_stop_the_sampler() {
    let (grid, codes) = ((3, 5), 7);
    let l = grid.0 * grid.1;
    for bad in [f32::INFINITY, f32::NAN, f32::NEG_INFINITY] {
        let mut v = vec![0.5f32; l * codes];
        // One position with a non-finite logit; with -inf everywhere the total is zero.
        if bad == f32::NEG_INFINITY {
            v[codes..2 * codes].fill(bad);
        } else {
            v[codes + 2] = bad;
        }
        let model = Fixed {
            logits: Tensor::from_f32(ctx(), "logits", &[1, l, codes], &v).expect("upload"),
            grid,
            codes,
            asked: Default::default(),
        };
        for kind in [
            SamplerKind::MaskGit,
            SamplerKind::Amused,
            SamplerKind::Paella,
        ] {
            let opts = SamplerOptions::for_kind(kind, 1);
            let init = vec![codes as u32; l];
            let err = sampling::generate(ctx(), &model, 1, &init, &opts, &mut |_| {
                ControlFlow::Continue(())
            })
            .expect_err("non-finite logits sampled");
            assert!(
                err.to_string().contains("not finite"),
                "{kind:?} {bad}: {err}"
            );
        }
    }
}

/// The model is told where the sampler is (the step a noise-level network such as Paella's
/// needs): every step once, in order, from img2img's start step on.
#[test]
fn the_model_is_asked_at_every_step_in_order() {
    for kind in [
        SamplerKind::MaskGit,
        SamplerKind::Amused,
        SamplerKind::Paella,
    ] {
        for start_step in [0, 3] {
            let model = Fixed::new(1, (3, 3), 16, 5);
            let mut opts = SamplerOptions::for_kind(kind, 2);
            opts.steps = 6;
            opts.start_step = start_step;
            let init = vec![model.mask_id(); 9];
            sampling::generate(ctx(), &model, 1, &init, &opts, &mut |_| {
                ControlFlow::Continue(())
            })
            .expect("generate");
            let want: Vec<Step> = (start_step..6)
                .map(|index| Step { index, steps: 6 })
                .collect();
            assert_eq!(
                *model.asked.borrow(),
                want,
                "{kind:?} from step {start_step}"
            );
        }
    }
}

/// Records the token grids it is asked about; logits as [`Fixed`].
struct Recording {
    inner: Fixed,
    seen: std::cell::RefCell<Vec<Vec<u32>>>,
}

impl TokenModel for Recording {
    fn grid(&self) -> (usize, usize) {
        self.inner.grid
    }
    fn codebook_size(&self) -> usize {
        self.inner.codes
    }
    fn mask_id(&self) -> u32 {
        self.inner.codes as u32
    }
    fn logits(&self, rec: &mut Recorder<'_>, tokens: &Tensor, step: Step) -> Result<Tensor> {
        self.seen.borrow_mut().push(tokens.to_u32(ctx())?);
        self.inner.logits(rec, tokens, step)
    }
}

/// Paella's img2img: with start tokens, the unknown positions enter the first step as those
/// tokens (not random codes), the run begins at the start step (noise level 1 − start/steps),
/// and known positions stay as given; without them the first grid is random codes.
#[test]
fn paella_start_tokens_enter_the_first_step() {
    let (grid, codes) = ((4, 4), 16);
    let model = Recording {
        inner: Fixed::new(1, grid, codes, 41),
        seen: Default::default(),
    };
    let mask = model.mask_id();
    let start: Vec<u32> = (0..16).map(|i| (i * 5 % 16) as u32).collect();
    let mut init = vec![mask; 16];
    init[3] = 9;
    let mut opts = SamplerOptions::paella(5);
    opts.steps = 6;
    opts.start_step = 3;
    let out = sampling::generate_from(ctx(), &model, 1, &init, Some(&start), &opts, &mut |_| {
        ControlFlow::Continue(())
    })
    .expect("generate");
    let seen = model.seen.borrow();
    assert_eq!(seen.len(), 3, "steps 3, 4 and 5 run");
    let mut want = start.clone();
    want[3] = 9;
    assert_eq!(
        seen[0], want,
        "the first grid is the start tokens, known ones kept"
    );
    assert_eq!(out[3], 9);
    assert_eq!(
        model.inner.asked.borrow().first().map(|s| s.index),
        Some(3),
        "the first step asked is the start step"
    );
    drop(seen);
    // Without start tokens the unknown positions begin as random codes.
    model.seen.borrow_mut().clear();
    sampling::generate_from(ctx(), &model, 1, &init, None, &opts, &mut |_| {
        ControlFlow::Continue(())
    })
    .expect("generate");
    assert_ne!(model.seen.borrow()[0], want);
    // Start tokens must be codes.
    let bad = vec![codes as u32; 16];
    assert!(
        sampling::generate_from(ctx(), &model, 1, &init, Some(&bad), &opts, &mut |_| {
            ControlFlow::Continue(())
        })
        .is_err()
    );
}
