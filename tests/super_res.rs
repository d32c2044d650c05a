//! Two-stage models (a base aMUSEd pipeline plus a `super_res/` super-resolution stage): the
//! super-resolution transformer against its PyTorch reference (tests/fixtures/amused/tiny-sr,
//! made by tools/fixtures/make_super_res_fixtures.py from tools/train/super_res_model.py), and
//! the two-stage pipeline end to end through `--render`.

mod common;

use common::*;

use std::path::{Path, PathBuf};

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/amused/tiny-sr")
}

fn png_text(path: &Path) -> String {
    tessera::files::png_parameters(path).expect("parameters chunk")
}

/// Runs a failing command: exit ≠ 0, one `Error:` line naming `expect`, no output file.
fn fails(args: &[&str], out: &Path, expect: &str) {
    let o = tessera(args);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{args:?} succeeded");
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("Error:")).collect();
    assert_eq!(lines.len(), 1, "{args:?}: want one Error: line, got\n{err}");
    assert!(
        lines[0].contains(expect),
        "{args:?}: {:?} does not say {expect:?}",
        lines[0]
    );
    assert!(!err.contains("panicked"), "{args:?} panicked:\n{err}");
    assert!(!out.exists(), "{args:?} wrote {}", out.display());
}

fn logits(prompt: &str, out: &Path) -> Vec<f64> {
    let dir = fixture();
    ok(&[
        "forward",
        "--model",
        s(&dir.join("model")),
        "--stage",
        "super-res",
        "--tokens",
        s(&dir.join("tokens_hi_masked.safetensors")),
        "--low-res-tokens",
        s(&dir.join("tokens_lo.safetensors")),
        "--prompt",
        prompt,
        "--out",
        s(out),
    ]);
    let got = read(out);
    assert_eq!(got["logits"].0, vec![1, 64, 30]);
    got["logits"].1.clone()
}

#[test]
fn super_res_forward_matches_the_reference() {
    let dir = fixture();
    let cond = logits("a red apple", &tmp("sr-cond.safetensors"));
    let want = read(&dir.join("forward_sr.safetensors"));
    let e = rel_err(&cond, &want["logits"].1);
    eprintln!("super-res forward: relative error {e:.2e}");
    assert!(e <= 1e-4, "super-res logits relative error {e:.2e} > 1e-4");
    // The guided reference's rows: [negative prompt ""; prompt], both on the same low-res
    // tokens (the unconditional branch drops only the text).
    let guided = read(&dir.join("forward_sr_guided.safetensors"));
    let (shape, rows) = &guided["logits"];
    assert_eq!(shape, &vec![2, 64, 30]);
    let uncond = logits("", &tmp("sr-uncond.safetensors"));
    let (u, c) = rows.split_at(64 * 30);
    let (eu, ec) = (rel_err(&uncond, u), rel_err(&cond, c));
    eprintln!("super-res guided rows: relative errors {eu:.2e} (\"\"), {ec:.2e} (prompt)");
    assert!(eu <= 1e-4 && ec <= 1e-4);
    // The prompt matters: a test that could not tell the rows apart would prove nothing.
    assert!(rel_err(&uncond, c) > 1e-3);
}

/// A 32×32 image of two flat colours (the tiny VQ's output size).
fn image_32() -> PathBuf {
    let path = tmp("sr-input.png");
    let mut img = image::RgbImage::new(32, 32);
    for (x, y, p) in img.enumerate_pixels_mut() {
        *p = if (x / 8 + y / 8) % 2 == 0 {
            image::Rgb([200, 40, 40])
        } else {
            image::Rgb([30, 160, 70])
        };
    }
    img.save(&path).expect("save");
    path
}

/// `--render` of "a red apple" from `image` on `model` with `seed`: the PNG to `out`, the
/// tokens to `tok`.
fn render_image<'a>(
    out: &'a Path,
    tok: &'a Path,
    model: &'a Path,
    image: &'a Path,
    seed: &'a str,
) -> Vec<&'a str> {
    vec![
        "--render",
        s(out),
        "--model",
        s(model),
        "--prompt",
        "a red apple",
        "--seed",
        seed,
        "--image",
        s(image),
        "--tokens-out",
        s(tok),
    ]
}

fn tokens(path: &Path) -> (Vec<usize>, Vec<f64>) {
    read(path).remove("tokens").expect("tokens")
}

#[test]
fn both_stages_render_and_stages_1_is_the_base_pipeline() {
    let dir = fixture();
    let model = dir.join("model");
    let render = |name: &str, extra: &[&str]| {
        let (png, tok) = (tmp(&format!("{name}.png")), tmp(&format!("{name}.st")));
        let mut args = vec![
            "--render",
            s(&png),
            "--model",
            s(&model),
            "--prompt",
            "a red apple",
            "--seed",
            "7",
            "--tokens-out",
            s(&tok),
        ];
        args.extend(extra);
        let err = ok(&args);
        (png, tok, err)
    };
    // Both stages: the super-resolution stage's 8×8 grid, 32 px, its 8 steps after the base's 12.
    let (png, tok, err) = render("two", &[]);
    let img = image::open(&png).expect("png").to_rgb8();
    assert_eq!(img.dimensions(), (32, 32));
    assert_eq!(tokens(&tok).0, vec![1, 8, 8]);
    let text = png_text(&png);
    assert!(
        text.contains("Steps: 12,") && text.contains("Stages: 2, Super-res steps: 8,"),
        "{text}"
    );
    let per_step = |err: &str| {
        err.lines()
            .find_map(|l| l.strip_prefix("tokens fixed per step: "))
            .map(|l| {
                l.split(' ')
                    .map(|n| n.parse::<usize>().expect("count"))
                    .collect::<Vec<_>>()
            })
            .expect("per-step line")
    };
    let fixed = per_step(&err);
    assert_eq!(fixed.len(), 12 + 8);
    assert_eq!(
        fixed[..12].iter().sum::<usize>(),
        16,
        "the base fills its 4×4 grid"
    );
    assert_eq!(
        fixed[12..].iter().sum::<usize>(),
        64,
        "the stage fills its 8×8 grid"
    );
    // Deterministic, and --sr-steps sets the stage's steps.
    let (png_again, _, _) = render("two-again", &[]);
    assert_eq!(std::fs::read(&png).ok(), std::fs::read(&png_again).ok());
    let (png3, _, err3) = render("three", &["--sr-steps", "3"]);
    assert_eq!(per_step(&err3).len(), 12 + 3);
    assert!(png_text(&png3).contains("Super-res steps: 3,"));
    // --stages 1 stops after the base: the base folder's own pipeline, token for token.
    let (png1, tok1, _) = render("one", &["--stages", "1"]);
    assert_eq!(tokens(&tok1).0, vec![1, 4, 4]);
    assert!(png_text(&png1).contains("Stages: 1, Seed"));
    let base = tmp("base.st");
    ok(&[
        "--render",
        s(&tmp("base.png")),
        "--model",
        s(&dir.join("../tiny-a/model")),
        "--prompt",
        "a red apple",
        "--seed",
        "7",
        "--tokens-out",
        s(&base),
    ]);
    assert_eq!(tokens(&tok1), tokens(&base));
    // --from-png redoes a two-stage image, stages and all.
    let redo = tmp("redo.png");
    ok(&["--render", s(&redo), "--from-png", s(&png3)]);
    assert_eq!(std::fs::read(&png3).ok(), std::fs::read(&redo).ok());
    let redo1 = tmp("redo1.png");
    ok(&["--render", s(&redo1), "--from-png", s(&png1)]);
    assert_eq!(std::fs::read(&png1).ok(), std::fs::read(&redo1).ok());
}

#[test]
fn two_stage_inpainting_keeps_the_image_outside_the_mask_at_full_resolution() {
    let dir = fixture();
    let model = dir.join("model");
    let input = image_32();
    let encoded = tmp("sr-encoded.st");
    ok(&[
        "encode",
        "--model",
        s(&model),
        "--stage",
        "super-res",
        "--image",
        s(&input),
        "--out",
        s(&encoded),
    ]);
    let (shape, orig) = tokens(&encoded);
    assert_eq!(shape, vec![1, 8, 8]);
    // The stage decodes with the base's VQ: its grid gives the 32 px image.
    let decoded = tmp("sr-decoded.png");
    ok(&[
        "decode",
        "--model",
        s(&model),
        "--stage",
        "super-res",
        "--tokens",
        s(&encoded),
        "--out",
        s(&decoded),
    ]);
    let img = image::open(&decoded).expect("png").to_rgb8();
    assert_eq!(img.dimensions(), (32, 32));
    // Right quarter white = repaint: token columns 6–7 of 8 (columns 3 of the base's 4).
    let mask = tmp("sr-mask.png");
    let mut m = image::GrayImage::new(32, 32);
    for (x, _, p) in m.enumerate_pixels_mut() {
        p[0] = if x >= 24 { 255 } else { 0 };
    }
    m.save(&mask).expect("save mask");
    for (name, extra) in [("inpaint", vec!["--mask", s(&mask)]), ("img2img", vec![])] {
        let (out, tok) = (
            tmp(&format!("sr-{name}.png")),
            tmp(&format!("sr-{name}.st")),
        );
        let mut args = render_image(&out, &tok, &model, &input, "3");
        args.extend(extra);
        ok(&args);
        let (shape, got) = tokens(&tok);
        assert_eq!(
            shape,
            vec![1, 8, 8],
            "{name} works at the output resolution"
        );
        if name == "inpaint" {
            for i in 0..64 {
                if i % 8 < 6 {
                    assert_eq!(got[i], orig[i], "token {i} outside the mask changed");
                }
            }
        }
    }
}

/// A two-stage model works at its output size only (the super-resolution stage's positions
/// fix the grid), so an image of another size is resized to it, as diffusers' image processor
/// resizes (Lanczos), and its mask with it: the run is the run on the resized image.
#[test]
fn an_image_of_another_size_is_resized_to_the_output_size() {
    let dir = fixture();
    let model = dir.join("model");
    let small = dir.join("../tiny-a/encode_input.png");
    let img = image::open(&small).expect("png").to_rgb8();
    assert_eq!(img.dimensions(), (16, 16));
    // The same image and mask at the output size: the mask's right quarter (token columns
    // 6–7 of 8) at either size.
    let resized = tmp("sr-resized-32.png");
    tessera::pil_resize::resize_lanczos_rgb8(&img, (32, 32))
        .save(&resized)
        .expect("save");
    let mask = |size: u32, path: &Path| {
        let mut m = image::GrayImage::new(size, size);
        for (x, _, p) in m.enumerate_pixels_mut() {
            p[0] = if x >= size * 3 / 4 { 255 } else { 0 };
        }
        m.save(path).expect("save mask");
    };
    let (mask16, mask32) = (tmp("sr-mask-16.png"), tmp("sr-mask-32.png"));
    mask(16, &mask16);
    mask(32, &mask32);
    let run = |name: &str, image: &Path, extra: &[&str]| {
        let (out, tok) = (
            tmp(&format!("sr-fit-{name}.png")),
            tmp(&format!("sr-fit-{name}.st")),
        );
        let mut args = render_image(&out, &tok, &model, image, "5");
        args.extend_from_slice(extra);
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_tessera"))
            .args(&args)
            .env("RUST_LOG", "warn")
            .output()
            .expect("run");
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(o.status.success(), "{name}: {err}");
        let png = image::open(&out).expect("png").to_rgb8();
        (png.dimensions(), tokens(&tok), err)
    };
    for (name, extra16, extra32) in [
        (
            "img2img",
            vec!["--strength", "0.6"],
            vec!["--strength", "0.6"],
        ),
        (
            "inpaint",
            vec!["--mask", s(&mask16)],
            vec!["--mask", s(&mask32)],
        ),
    ] {
        let (size, got, err) = run(&format!("{name}-16"), &small, &extra16);
        assert_eq!(size, (32, 32), "{name}: the output size");
        assert!(
            err.contains("resizing 16×16 to 32×32 (this model works on 32×32 px only)"),
            "{name}: {err}"
        );
        let (_, want, err) = run(&format!("{name}-32"), &resized, &extra32);
        assert!(!err.contains("resizing"), "{err}");
        assert_eq!(got, want, "{name}: the run on the resized image");
    }
}

/// `tessera bench` on a two-stage model: both stages by default (the super-resolution
/// steps apart in the JSON), the base alone with `--stages 1` (as diffusers runs the base
/// folder, for like-for-like ratios); stage options where they do not apply are refused.
#[test]
fn bench_runs_both_stages_or_the_base_alone() {
    let dir = fixture();
    let model = dir.join("model");
    let bench = |extra: &[&str]| {
        let mut args = vec![
            "bench",
            "--json",
            "--no-kernels",
            "--steps",
            "2",
            "--model",
            s(&model),
        ];
        args.extend_from_slice(extra);
        let o = common::tessera(&args);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("one JSON object");
        v["end_to_end"].clone()
    };
    let both = bench(&["--sr-steps", "3"]);
    assert_eq!(
        (&both["stages"], &both["super_res_steps"]),
        (&2.into(), &3.into()),
        "{both}"
    );
    assert!(
        both["super_res_step_ms"].as_f64().is_some_and(|x| x > 0.0),
        "{both}"
    );
    let base = bench(&["--stages", "1"]);
    assert_eq!(
        (&base["stages"], &base["super_res_steps"]),
        (&1.into(), &0.into()),
        "{base}"
    );
    let one_stage = dir.join("../tiny-a/model");
    for (args, expect) in [
        (vec!["--model", s(&one_stage), "--stages", "2"], "two-stage"),
        (vec!["--model", s(&one_stage), "--stages", "1"], "two-stage"),
        (vec!["--model", s(&model), "--stages", "3"], "--stages"),
        (
            vec!["--model", s(&model), "--stages", "1", "--sr-steps", "2"],
            "--stages 1",
        ),
        (
            vec!["--model", s(&model), "--stages", "1", "--no-end-to-end"],
            "--no-end-to-end",
        ),
    ] {
        let mut all = vec!["bench", "--no-kernels"];
        all.extend_from_slice(&args);
        let o = common::tessera(&all);
        let err = String::from_utf8_lossy(&o.stderr);
        let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("Error:")).collect();
        assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
        assert!(
            lines.len() == 1 && lines[0].contains(expect),
            "{args:?}: {err}"
        );
    }
}

#[test]
fn bad_two_stage_input_is_one_error_line_before_work() {
    let dir = fixture();
    let model = dir.join("model");
    let out = tmp("never.png");
    let one_stage = dir.join("../tiny-a/model");
    fn render<'a>(out: &'a Path, extra: &[&'a str]) -> Vec<&'a str> {
        let mut v = vec!["--render", s(out), "--prompt", "a red apple"];
        v.extend_from_slice(extra);
        v
    }
    fails(
        &render(&out, &["--model", s(&one_stage), "--stages", "1"]),
        &out,
        "two-stage",
    );
    fails(
        &render(&out, &["--model", s(&one_stage), "--sr-steps", "4"]),
        &out,
        "two-stage",
    );
    fails(
        &render(&out, &["--model", s(&model), "--stages", "3"]),
        &out,
        "--stages",
    );
    fails(
        &render(
            &out,
            &["--model", s(&model), "--stages", "1", "--sr-steps", "2"],
        ),
        &out,
        "--stages 1",
    );
    fails(
        &render(&out, &["--model", s(&model), "--sr-steps", "0"]),
        &out,
        "--sr-steps",
    );
    // The stage's positions fix the grid: outpainting is refused (other sizes are resized:
    // `an_image_of_another_size_is_resized_to_the_output_size`).
    let input = image_32();
    fails(
        &render(
            &out,
            &[
                "--model",
                s(&model),
                "--image",
                s(&input),
                "--outpaint",
                "8,0,0,0",
            ],
        ),
        &out,
        "fixed",
    );
    // The inspection command: low-res tokens go with --stage super-res, on two-stage models.
    let lo = dir.join("tokens_lo.safetensors");
    let hi = dir.join("tokens_hi_masked.safetensors");
    let logits = tmp("never.safetensors");
    let forward = |model: &Path, stage: &str, low: Option<&Path>| {
        let mut v = vec![
            "forward".to_owned(),
            "--model".into(),
            s(model).into(),
            "--stage".into(),
            stage.into(),
            "--tokens".into(),
            s(&hi).into(),
            "--out".into(),
            s(&logits).into(),
        ];
        if let Some(p) = low {
            v.extend(["--low-res-tokens".into(), s(p).into()]);
        }
        v
    };
    let run = |v: Vec<String>, expect: &str| {
        let a: Vec<&str> = v.iter().map(String::as_str).collect();
        fails(&a, &logits, expect);
    };
    run(forward(&model, "super-res", None), "--low-res-tokens");
    run(forward(&model, "base", Some(&lo)), "--stage super-res");
    run(forward(&one_stage, "super-res", Some(&lo)), "two-stage");
    // Low-res tokens of the wrong grid: an image's 8×8 codes.
    let wrong = tmp("sr-8x8.st");
    ok(&[
        "encode",
        "--model",
        s(&model),
        "--image",
        s(&input),
        "--out",
        s(&wrong),
    ]);
    run(forward(&model, "super-res", Some(&wrong)), "4×4");
    // decode / encode --stage super-res: the stage's grid, on two-stage models.
    let png = tmp("never-decoded.png");
    fails(
        &[
            "decode",
            "--model",
            s(&model),
            "--stage",
            "super-res",
            "--tokens",
            s(&lo),
            "--out",
            s(&png),
        ],
        &png,
        "8×8",
    );
    fails(
        &[
            "decode",
            "--model",
            s(&one_stage),
            "--stage",
            "super-res",
            "--tokens",
            s(&lo),
            "--out",
            s(&png),
        ],
        &png,
        "two-stage",
    );
    let small = dir.join("../tiny-a/encode_input.png");
    let st = tmp("never-encoded.st");
    fails(
        &[
            "encode",
            "--model",
            s(&model),
            "--stage",
            "super-res",
            "--image",
            s(&small),
            "--out",
            s(&st),
        ],
        &st,
        "8×8",
    );
    // A broken super_res/ folder is named when the model opens.
    for (what, edit, expect) in [
        ("class", "model_index.json", "_class_name"),
        ("grid", "transformer/config.json", "low_res_sample_size"),
        ("vqvae", "vqvae", "second VQ"),
        ("guidance", "tessera.json", "base folder's tessera.json"),
    ] {
        let bad = tmp(&format!("bad-sr-{what}"));
        copy_dir(&model, &bad);
        let sr = bad.join("super_res");
        match what {
            "class" => {
                let p = sr.join(edit);
                let t = std::fs::read_to_string(&p).expect("read");
                std::fs::write(&p, t.replace("TesseraSuperResPipeline", "Other")).expect("write");
            }
            "grid" => {
                // The base now makes 8×8 grids; the stage is conditioned on 4×4 ones.
                let p = bad.join(edit);
                let t = std::fs::read_to_string(&p).expect("read");
                let t = t.replace("\"sample_size\": 4", "\"sample_size\": 8");
                assert!(t.contains("\"sample_size\": 8"));
                std::fs::write(&p, t).expect("write");
            }
            "guidance" => {
                // The stage runs with the base's guidance: its own would be ignored.
                std::fs::write(
                    sr.join(edit),
                    r#"{ "steps": 2, "guidance_schedule": "first:1" }"#,
                )
                .expect("write");
            }
            _ => copy_dir(&bad.join("vqvae"), &sr.join(edit)),
        }
        fails(&render(&out, &["--model", s(&bad)]), &out, expect);
    }
}

#[test]
fn a_prompt_list_sets_the_stages_per_line() {
    let list = tmp("sr-list.jsonl");
    std::fs::write(
        &list,
        "{\"prompt\": \"a red apple\"}\n{\"prompt\": \"a red apple\", \"stages\": 1}\n\
         {\"prompt\": \"a red apple\", \"sr_steps\": 3}\n",
    )
    .expect("write list");
    let out = tmp("sr-batch");
    ok(&[
        "batch",
        s(&list),
        "--out",
        s(&out),
        "--model",
        s(&fixture().join("model")),
        "--steps",
        "2",
    ]);
    let size = |n: &str| {
        image::open(out.join(n))
            .expect("png")
            .to_rgb8()
            .dimensions()
    };
    assert_eq!(size("00001.png"), (32, 32));
    assert_eq!(size("00002.png"), (16, 16));
    assert!(png_text(&out.join("00002.png")).contains("Stages: 1,"));
    assert!(png_text(&out.join("00003.png")).contains("Super-res steps: 3,"));
}

/// The library's two-stage pipeline: its base stage is the base folder's own pipeline token for
/// token (the same prompt rows, the base's micro-conditioning), and planning both stages records
/// no more GPU work than planning the base alone, because the prompts are encoded once for both.
#[test]
fn the_base_stage_of_two_is_the_base_alone_and_the_text_is_encoded_once() {
    use std::ops::ControlFlow;
    use tessera_engine::GpuContext;
    use tessera_engine::pipeline::{self, Condition, Model, Request, Start, SuperResOptions};
    use tessera_engine::sampling::SamplerOptions;

    let ctx = GpuContext::new().expect("adapter (apt-get install mesa-vulkan-drivers)");
    let model = Model::open(&ctx, &fixture().join("model")).expect("load");
    let request = |skip: bool, grid: usize| Request {
        condition: Condition::Text {
            prompt: "a red apple",
            negative_prompt: "",
        },
        batch: 1,
        guidance: 3.0,
        sampler: SamplerOptions::amused(7),
        start: Start::Blank((grid, grid)),
        super_res: SuperResOptions { skip, steps: None },
    };
    let planned = |req: &Request<'_>| {
        let before = ctx.work_counts();
        let plan = pipeline::plan(&ctx, &model, req).expect("plan");
        (plan, ctx.work_counts() - before)
    };
    let (one, one_work) = planned(&request(true, 4));
    let (two, two_work) = planned(&request(false, 8));
    assert!(
        one_work.dispatches > 0,
        "the base's plan encodes the prompts"
    );
    assert_eq!(
        two_work.dispatches, one_work.dispatches,
        "a two-stage plan records the base's work and nothing more"
    );
    let alone = one
        .run(&ctx, &mut |_| ControlFlow::Continue(()))
        .expect("run");
    let mut base_of_two = Vec::new();
    let both = two
        .run(&ctx, &mut |ev| {
            if ev.stage == 0 {
                base_of_two = ev.tokens.to_vec();
            }
            ControlFlow::Continue(())
        })
        .expect("run");
    assert_eq!((alone.grid, both.grid), ((4, 4), (8, 8)));
    assert_eq!(base_of_two, alone.tokens);
}
