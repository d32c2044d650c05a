//! MaskGIT's Flax checkpoints through the CLI: the inspection commands reproduce the reference
//! outputs of the committed fixtures (tests/fixtures/maskgit, made by
//! tools/fixtures/make_maskgit_fixtures.py, whose NumPy reference was first checked against the
//! official code's outputs), and `--render --class N` generates.

mod common;

use common::*;

use std::path::{Path, PathBuf};

const CASES: [&str; 2] = ["mg-l4", "mg-2rb"];

fn fixture(case: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/maskgit")
        .join(case)
}

fn class(case: &str) -> String {
    let text = std::fs::read_to_string(fixture(case).join("case.json")).expect("case.json");
    let v: serde_json::Value = serde_json::from_str(&text).expect("json");
    v["class"].as_u64().expect("class").to_string()
}

#[test]
fn inspection_commands_match_the_reference() {
    for case in CASES {
        let dir = fixture(case);
        let model = dir.join("model");
        let cls = class(case);
        let out = tmp(&format!("{case}-logits.safetensors"));
        ok(&[
            "forward",
            "--model",
            s(&model),
            "--tokens",
            s(&dir.join("tokens_masked.safetensors")),
            "--class",
            &cls,
            "--out",
            s(&out),
        ]);
        let (got, want) = (read(&out), read(&dir.join("expect_logits.safetensors")));
        assert_eq!(got["logits"].0, want["logits"].0, "{case}: logits shape");
        let e = rel_err(&got["logits"].1, &want["logits"].1);
        eprintln!("{case} forward: logits relative error {e:.2e}");
        assert!(e <= 1e-3, "{case}: logits off by {e:e}");

        let (png, raw) = (
            tmp(&format!("{case}.png")),
            tmp(&format!("{case}-image.safetensors")),
        );
        ok(&[
            "decode",
            "--model",
            s(&model),
            "--tokens",
            s(&dir.join("tokens_full.safetensors")),
            "--out",
            s(&png),
            "--raw",
            s(&raw),
        ]);
        let (got, want) = (read(&raw), read(&dir.join("expect_image.safetensors")));
        let e = rel_err(&got["image"].1, &want["image"].1);
        eprintln!("{case} decode: image relative error {e:.2e}");
        assert!(e <= 1e-3, "{case}: image off by {e:e}");

        let enc = tmp(&format!("{case}-encode.safetensors"));
        ok(&[
            "encode",
            "--model",
            s(&model),
            "--image",
            s(&dir.join("encode_input.png")),
            "--out",
            s(&enc),
        ]);
        assert_eq!(
            read(&enc)["tokens"].1,
            read(&dir.join("expect_encode.safetensors"))["tokens"].1,
            "{case}: tokens"
        );
    }
}

#[test]
fn render_generates_by_class_and_needs_one() {
    let dir = fixture("mg-l4");
    let model = dir.join("model");
    let (out, tok, gif, frames) = (
        tmp("render.png"),
        tmp("render.safetensors"),
        tmp("render.gif"),
        tmp("render-frames"),
    );
    let err = ok(&[
        "--render",
        s(&out),
        "--model",
        s(&model),
        "--class",
        "3",
        "--seed",
        "1",
        "--tokens-out",
        s(&tok),
        "--gif",
        s(&gif),
        "--frames",
        s(&frames),
    ]);
    assert!(err.contains("8 steps") && err.contains("class 3"), "{err}");
    // One animation frame per step: token grid beside the decoded preview.
    let gif_frames = {
        use image::AnimationDecoder;
        let f = std::io::BufReader::new(std::fs::File::open(&gif).expect("gif"));
        image::codecs::gif::GifDecoder::new(f)
            .expect("gif")
            .into_frames()
            .count()
    };
    assert_eq!(gif_frames, 8);
    for i in 1..=8 {
        let f = frames.join(format!("step-{i:02}.png"));
        let img = image::open(&f).expect("frame png");
        assert!(img.width() > img.height(), "{}", f.display());
    }
    let t = read(&tok);
    assert_eq!(t["tokens"].0, vec![1, 4, 4]);
    assert!(t["tokens"].1.iter().all(|&v| (0.0..40.0).contains(&v)));
    assert!(out.is_file());
    // Inpainting keeps the unmasked tokens of the encoded image.
    let mask = tmp("mask.png");
    let mut m = image::GrayImage::new(32, 32);
    for (x, _, p) in m.enumerate_pixels_mut() {
        p[0] = if x < 16 { 255 } else { 0 };
    }
    m.save(&mask).expect("mask");
    ok(&[
        "--render",
        s(&out),
        "--model",
        s(&model),
        "--class",
        "3",
        "--seed",
        "1",
        "--image",
        s(&dir.join("encode_input.png")),
        "--mask",
        s(&mask),
        "--tokens-out",
        s(&tok),
    ]);
    let got = read(&tok)["tokens"].1.clone();
    let orig = read(&dir.join("expect_encode.safetensors"))["tokens"]
        .1
        .clone();
    for i in 0..16 {
        if i % 4 >= 2 {
            assert_eq!(got[i], orig[i], "token {i} outside the mask changed");
        }
    }
    // No class: one clear error, nothing written.
    let missing = tmp("never.png");
    let o = tessera(&["--render", s(&missing), "--model", s(&model)]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("--class"));
    assert!(!missing.exists());
    // Text options do nothing for a class-conditional model: refused, nothing written.
    for extra in [
        ["--prompt", "a dog"],
        ["--negative-prompt", "blur"],
        ["--guidance", "3"],
    ] {
        let mut args = vec![
            "--render",
            s(&missing),
            "--model",
            s(&model),
            "--class",
            "3",
        ];
        args.extend(extra);
        let o = tessera(&args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{err}");
        assert!(err.contains(extra[0]) && err.contains("--class"), "{err}");
        assert!(!missing.exists());
    }
}

#[test]
fn a_transformer_and_a_tokenizer_of_different_checkpoints_are_refused() {
    // mg-l4's transformer (imagenet32) beside mg-2rb's tokenizer (imagenet10).
    let dir = tmp("mismatched-pair");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::copy(
        fixture("mg-l4").join("model/maskgit_imagenet32_checkpoint"),
        dir.join("maskgit_imagenet32_checkpoint"),
    )
    .expect("copy");
    std::fs::copy(
        fixture("mg-2rb").join("model/tokenizer_imagenet10_checkpoint"),
        dir.join("tokenizer_imagenet10_checkpoint"),
    )
    .expect("copy");
    let out = tmp("never-mismatched.png");
    let o = tessera(&["--render", s(&out), "--model", s(&dir), "--class", "1"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("belong to different checkpoints") && err.contains("imagenet32"),
        "{err}"
    );
    assert!(!out.exists());
}

/// One pipeline for every family: a MaskGIT folder opens as a `Model` like an aMUSEd folder,
/// and the engine refuses what the family cannot do (outpainting with fixed positions,
/// guidance without an unconditional branch, text, another grid) with one line naming the
/// option, before any work.
#[test]
fn one_pipeline_checks_what_each_family_takes() {
    use tessera_engine::pipeline::{
        self, Condition, Family, Model, ModelConditioning, Request, RequestOption, Start,
    };
    let ctx = tessera_engine::GpuContext::new().expect("adapter");
    let mg = Model::open(&ctx, &fixture("mg-l4").join("model")).expect("maskgit");
    let amused = Model::open(
        &ctx,
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/amused/tiny-b/model"),
    )
    .expect("amused");
    assert_eq!(mg.family(), Family::MaskGit);
    assert_eq!(amused.family(), Family::Amused);
    assert!(matches!(
        mg.conditioning(),
        ModelConditioning::Class { classes: 10 }
    ));
    assert_eq!(amused.conditioning(), ModelConditioning::Text);
    let class = Condition::Class {
        label: 3,
        name: None,
    };
    let text = Condition::Text {
        prompt: "blue heart",
        negative_prompt: "",
    };
    let request = |model: &Model, condition, guidance: f32, start: Start| Request {
        condition,
        batch: 1,
        guidance,
        sampler: model.sampler_defaults(None, 1, false).expect("defaults"),
        start,
        super_res: Default::default(),
    };
    let f = mg.vq_factor();
    let (h, w) = mg.grid();
    let image = vec![0.5; 3 * h * f * w * f];
    let cases: Vec<(&Model, Request<'_>, RequestOption)> = vec![
        (
            &amused,
            request(&amused, class, 1.0, Start::Blank(amused.grid())),
            RequestOption::Class,
        ),
        (
            &mg,
            request(&mg, text, 1.0, Start::Blank(mg.grid())),
            RequestOption::Prompt,
        ),
        (
            &mg,
            request(&mg, class, 3.0, Start::Blank(mg.grid())),
            RequestOption::Guidance,
        ),
        (
            &mg,
            request(
                &mg,
                class,
                1.0,
                Start::Outpaint {
                    image: image.clone(),
                    size: (w * f, h * f),
                    grow: [1, 0, 0, 0],
                },
            ),
            RequestOption::Outpaint,
        ),
        (
            &mg,
            request(
                &mg,
                class,
                1.0,
                Start::Edit {
                    image: image.clone(),
                    size: (w * f, h * f),
                    iterations: 2,
                    fraction: 0.3,
                },
            ),
            RequestOption::Edit,
        ),
        (
            &mg,
            {
                let mut r = request(&mg, class, 1.0, Start::Blank(mg.grid()));
                r.sampler.guidance_schedule = tessera_engine::sampling::GuidanceSchedule::Linear;
                r
            },
            RequestOption::GuidanceSchedule,
        ),
    ];
    for (model, req, option) in cases {
        match pipeline::plan(&ctx, model, &req) {
            Err(tessera_engine::Error::Request {
                option: got,
                message,
            }) => {
                assert_eq!(got, option, "{message}");
                assert!(!message.is_empty());
            }
            Err(e) => panic!("{option}: another error: {e}"),
            Ok(_) => panic!("{option}: accepted"),
        }
    }
    // Another grid than the fixed one.
    let err = pipeline::plan(
        &ctx,
        &mg,
        &request(&mg, class, 1.0, Start::Blank((h + 1, w))),
    )
    .err()
    .expect("another grid");
    assert!(err.to_string().contains("works on"), "{err}");
    // Inpainting a MaskGIT model goes through the same pipeline as aMUSEd's.
    let region: Vec<bool> = (0..h * w).map(|i| i % w < w / 2).collect();
    let inpaint = request(
        &mg,
        class,
        1.0,
        Start::Inpaint {
            image,
            size: (w * f, h * f),
            mask: region.clone(),
        },
    );
    let (known, _) = mg
        .encode(&ctx, &vec![0.5; 3 * h * f * w * f], (w * f, h * f))
        .expect("encode");
    let out = pipeline::generate(&ctx, &mg, &inpaint, &mut |_| {
        std::ops::ControlFlow::Continue(())
    })
    .expect("inpaint");
    for (i, (&t, &repaint)) in out.tokens.iter().zip(&region).enumerate() {
        if !repaint {
            assert_eq!(t, known[i], "kept token {i} changed");
        }
    }
}
