//! `tessera --render` end to end on the committed tiny fixture pipelines, and classifier-free
//! guidance against separate conditional/unconditional passes.

mod common;

use common::*;

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use tessera_engine::GpuContext;
use tessera_engine::Tensor;
use tessera_engine::io::ModelFolder;
use tessera_engine::models::amused::AmusedPipeline;
use tessera_engine::pipeline::{Condition, GuidedTransformer, Model};
use tessera_engine::sampling::TokenModel;

fn fixture(case: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/amused")
        .join(case)
}

/// The pipeline tests' request: "blue heart", guidance 3, aMUSEd sampler with seed 5.
fn blue_heart(side: usize) -> tessera_engine::pipeline::Request<'static> {
    tessera_engine::pipeline::Request {
        condition: Condition::Text {
            prompt: "blue heart",
            negative_prompt: "",
        },
        batch: 1,
        guidance: 3.0,
        sampler: tessera_engine::sampling::SamplerOptions::amused(5),
        start: tessera_engine::pipeline::Start::Blank((side, side)),
        super_res: Default::default(),
    }
}

fn png_text(path: &Path) -> String {
    tessera::files::png_parameters(path).expect("parameters chunk")
}

fn tokens(path: &Path) -> (Vec<usize>, Vec<i64>) {
    let bytes = std::fs::read(path).expect("read");
    let st = safetensors::SafeTensors::deserialize(&bytes).expect("st");
    let t = st.tensor("tokens").expect("tokens");
    (t.shape().to_vec(), bytemuck::pod_collect_to_vec(t.data()))
}

#[test]
fn model_folder_defaults_apply_unless_flags_override() {
    let model = tmp("defaults-model");
    let _ = std::fs::remove_dir_all(&model);
    copy_dir(&fixture("tiny-b").join("model"), &model);
    let settings = model.join("tessera.json");
    std::fs::write(
        &settings,
        r#"{ "guidance_scale": 3.5, "steps": 4, "choice_temperature": [0.5, 0.0],
             "guidance_schedule": "first:2" }"#,
    )
    .expect("write");
    let png = tmp("defaults.png");
    let render = |extra: &[&str]| {
        let mut args = vec![
            "--render",
            s(&png),
            "--model",
            s(&model),
            "--prompt",
            "blue heart",
            "--seed",
            "1",
        ];
        args.extend_from_slice(extra);
        args.iter().map(|a| a.to_string()).collect::<Vec<_>>()
    };
    let run = |extra: &[&str]| {
        let args = render(extra);
        ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
        png_text(&png)
    };
    let text = run(&[]);
    for want in [
        "Steps: 4",
        "CFG scale: 3.5",
        "Choice temperature: 0.5:0",
        "Guidance schedule: first:2",
    ] {
        assert!(text.contains(want), "parameters {text:?} lack {want:?}");
    }
    let text = run(&[
        "--steps",
        "3",
        "--guidance",
        "2",
        "--choice-temperature",
        "1:0",
        "--guidance-schedule",
        "linear",
    ]);
    for want in [
        "Steps: 3",
        "CFG scale: 2",
        "Choice temperature: 1:0",
        "Guidance schedule: linear",
    ] {
        assert!(text.contains(want), "parameters {text:?} lack {want:?}");
    }
    // A misspelt key or an unknown schedule name is one error naming the file, and nothing
    // is written.
    for (bad, names) in [
        (r#"{ "guidance": 3 }"#, "guidance"),
        (r#"{ "guidance_schedule": "ramp" }"#, "ramp"),
    ] {
        std::fs::write(&settings, bad).expect("write");
        let _ = std::fs::remove_file(&png);
        let args = render(&[]);
        let o = tessera(&args.iter().map(String::as_str).collect::<Vec<_>>());
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            !o.status.success(),
            "a bad tessera.json ({bad}) was accepted"
        );
        assert!(err.contains("tessera.json") && err.contains(names), "{err}");
        assert!(!png.exists(), "left {}", png.display());
    }
}

#[test]
fn render_writes_png_tokens_and_gif_deterministically() {
    let model = fixture("tiny-b").join("model");
    let (png1, png2, tok, gif) = (
        tmp("a.png"),
        tmp("b.png"),
        tmp("t.safetensors"),
        tmp("d.gif"),
    );
    let err = ok(&[
        "--render",
        s(&png1),
        "--model",
        s(&model),
        "--prompt",
        "blue heart",
        "--seed",
        "42",
        "--tokens-out",
        s(&tok),
        "--gif",
        s(&gif),
    ]);
    assert!(err.contains("seed 42"), "{err}");
    let text = png_text(&png1);
    for want in [
        "blue heart",
        "Seed: 42",
        "Steps: 12",
        "Sampler: amused",
        "Schedule: cosine",
        "CFG scale: 10",
    ] {
        assert!(text.contains(want), "parameters {text:?} lack {want:?}");
    }
    let (shape, ids) = tokens(&tok);
    assert_eq!(shape, vec![1, 8, 8]);
    assert!(ids.iter().all(|&t| (0..30).contains(&t)), "{ids:?}");
    let gif_bytes = std::fs::read(&gif).expect("gif");
    assert!(gif_bytes.starts_with(b"GIF89a"));
    ok(&[
        "--render",
        s(&png2),
        "--model",
        s(&model),
        "--prompt",
        "blue heart",
        "--seed",
        "42",
    ]);
    assert_eq!(
        std::fs::read(&png1).expect("a"),
        std::fs::read(&png2).expect("b"),
        "same seed, same bytes"
    );
}

#[test]
fn every_sampler_and_schedule_renders() {
    let model = fixture("tiny-a").join("model");
    for (sampler, schedule) in [
        ("maskgit", "cubic"),
        ("amused", "pow:1.5"),
        ("paella", "cosine"),
        ("amused", "log"),
        ("maskgit", "exp"),
    ] {
        let out = tmp(&format!("{sampler}-{schedule}.png"));
        let err = ok(&[
            "--render",
            s(&out),
            "--model",
            s(&model),
            "--prompt",
            "a red apple",
            "--seed",
            "1",
            "--sampler",
            sampler,
            "--schedule",
            schedule,
            "--steps",
            "6",
            "--batch",
            "2",
        ]);
        assert!(err.contains("tokens fixed per step"), "{err}");
        let (o1, o2) = (
            out.with_file_name(format!("{sampler}-{schedule}-1.png")),
            out.with_file_name(format!("{sampler}-{schedule}-2.png")),
        );
        assert!(
            o1.is_file() && o2.is_file(),
            "batch outputs for {sampler}/{schedule}"
        );
    }
}

#[test]
fn inpainting_keeps_tokens_outside_the_mask() {
    let dir = fixture("tiny-b");
    let model = dir.join("model");
    // Left half white = repaint; the image is 32×32, the grid 8×8.
    let mask = tmp("mask.png");
    let mut m = image::GrayImage::new(32, 32);
    for (x, _, p) in m.enumerate_pixels_mut() {
        p[0] = if x < 16 { 255 } else { 0 };
    }
    m.save(&mask).expect("save mask");
    let (out, tok) = (tmp("inpaint.png"), tmp("inpaint.safetensors"));
    ok(&[
        "--render",
        s(&out),
        "--model",
        s(&model),
        "--prompt",
        "blue heart",
        "--seed",
        "3",
        "--image",
        s(&dir.join("encode_input.png")),
        "--mask",
        s(&mask),
        "--tokens-out",
        s(&tok),
    ]);
    let (_, got) = tokens(&tok);
    let (_, orig) = tokens(&dir.join("encode.safetensors"));
    for i in 0..64 {
        if i % 8 >= 4 {
            assert_eq!(got[i], orig[i], "token {i} outside the mask changed");
        }
    }
    assert!(
        png_text(&out).contains("Schedule: linear"),
        "inpainting uses the linear schedule"
    );
    // Outpainting: 8 px (two tokens) added on the left; the old image's tokens stay.
    let (out3, tok3) = (tmp("outpaint.png"), tmp("outpaint.safetensors"));
    ok(&[
        "--render",
        s(&out3),
        "--model",
        s(&model),
        "--prompt",
        "blue heart",
        "--seed",
        "3",
        "--image",
        s(&dir.join("encode_input.png")),
        "--outpaint",
        "8,0,0,0",
        "--tokens-out",
        s(&tok3),
    ]);
    let (shape, got) = tokens(&tok3);
    assert_eq!(shape, vec![1, 8, 10]);
    for y in 0..8 {
        for x in 0..8 {
            assert_eq!(
                got[y * 10 + x + 2],
                orig[y * 8 + x],
                "outpaint changed old token ({y}, {x})"
            );
        }
    }
    // img2img at low strength runs too.
    let out2 = tmp("img2img.png");
    ok(&[
        "--render",
        s(&out2),
        "--model",
        s(&model),
        "--prompt",
        "blue heart",
        "--seed",
        "3",
        "--image",
        s(&dir.join("encode_input.png")),
        "--strength",
        "0.3",
    ]);
    assert!(out2.is_file());
}

#[test]
fn bad_render_arguments_fail_without_writing() {
    let dir = fixture("tiny-b");
    let model = dir.join("model");
    let out = tmp("never.png");
    let wrong_mask = tmp("wrong_mask.png");
    image::GrayImage::new(16, 16)
        .save(&wrong_mask)
        .expect("save");
    let input = dir.join("encode_input.png");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--schedule", "wobbly"], "unknown schedule"),
        (vec!["--steps", "0"], "--steps"),
        (vec!["--image", s(&input), "--strength", "1.5"], "strength"),
        (
            vec!["--image", s(&input), "--mask", s(&wrong_mask)],
            "must match",
        ),
        (vec!["--sampler", "nope"], "unknown sampler"),
        (vec!["--choice-temperature", "hot"], "choice-temperature"),
        // Options this model or sampler would ignore.
        (
            vec!["--class", "207"],
            "--class applies to class-conditional",
        ),
        (
            vec!["--softmax-temperature", "1"],
            "applies to the paella sampler",
        ),
        (
            vec!["--guidance", "1", "--negative-prompt", "blur"],
            "needs classifier-free guidance",
        ),
        // Numbers that would overflow or allocate without bound.
        (
            vec!["--guidance", "3.4e38"],
            "--guidance must be a number from",
        ),
        (
            vec!["--guidance", "-3.4e38"],
            "--guidance must be a number from",
        ),
        (
            vec!["--guidance", "NaN"],
            "--guidance must be a number from",
        ),
        (vec!["--steps", "1000000000"], "--steps must be from 1 to"),
        (vec!["--batch", "1000000000"], "--batch must be from 1 to"),
        (
            vec!["--sampler", "paella", "--softmax-temperature", "1e-9"],
            "at least",
        ),
        (vec!["--choice-temperature", "1e30"], "choice-temperature"),
    ];
    for (extra, expect) in cases {
        let _ = std::fs::remove_file(&out);
        let mut args = vec!["--render", s(&out), "--model", s(&model), "--prompt", "x"];
        args.extend(extra.iter().copied());
        let o = tessera(&args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{args:?} succeeded");
        let first = err.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
        assert!(
            (first.starts_with("Error: ") || first.starts_with("error: ")) && err.contains(expect),
            "{args:?}: {err}"
        );
        assert!(!out.exists(), "{args:?} wrote {}", out.display());
    }
}

#[test]
fn guidance_is_uncond_plus_scale_times_difference() {
    let ctx = GpuContext::new().expect("adapter (apt-get install mesa-vulkan-drivers)");
    let folder = ModelFolder::open(&fixture("tiny-a").join("model")).expect("folder");
    let pipe = AmusedPipeline::load(&ctx, &folder).expect("load");
    let grid = (4, 4);
    let ids: Vec<u32> = (0..16)
        .map(|i| if i % 3 == 0 { 31 } else { i % 30 })
        .collect();
    let tokens = Tensor::from_u32(&ctx, "tokens", &[1, 4, 4], &ids).expect("tokens");
    let logits = |prompt: &str, negative: &str, s: f32| -> Vec<f32> {
        let m = GuidedTransformer::new(
            &ctx,
            &pipe,
            prompt,
            negative,
            1,
            (s, Default::default()),
            grid,
        )
        .expect("model");
        let mut rec = ctx.recorder();
        let l = m
            .logits(
                &mut rec,
                &tokens,
                tessera_engine::sampling::Step { index: 0, steps: 1 },
            )
            .expect("logits");
        rec.submit();
        l.to_f32(&ctx).expect("read")
    };
    let cond = logits("a red apple", "", 1.0);
    let uncond = logits("", "", 1.0);
    let guided = logits("a red apple", "", 3.0);
    let scale = cond.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    for i in 0..cond.len() {
        let want = uncond[i] + 3.0 * (cond[i] - uncond[i]);
        assert!(
            (guided[i] - want).abs() <= 1e-5 * scale * 3.0,
            "{i}: {} vs {want}",
            guided[i]
        );
    }
    // s = 1 is the conditional branch alone.
    let again = logits("a red apple", "some negative", 1.0);
    assert_eq!(again, cond);
}

#[test]
fn bench_json_has_the_documented_fields() {
    // The default model's base stage (its two stages: tests/super_res.rs).
    let o = tessera(&[
        "bench", "--json", "--sizes", "32", "--budget", "0", "--steps", "2", "--stages", "1",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value =
        serde_json::from_slice(&o.stdout).expect("one JSON object on stdout");
    assert!(v["adapter"]["name"].is_string() && v["adapter"]["backend"].is_string());
    let kernels = v["kernels"].as_array().expect("kernels");
    assert!(kernels.iter().any(|k| k["name"] == "matmul"
        && k["shape"] == serde_json::json!([32, 32, 32])
        && k["dtype"] == "f16"));
    // Host time per dispatch (no FLOPs), then kernels.
    assert!(
        kernels.iter().any(|k| k["name"] == "dispatch-host"
            && k["ms"].as_f64().is_some_and(|x| x > 0.0)
            && k["gflops"] == 0.0),
        "{kernels:?}"
    );
    for k in kernels.iter().filter(|k| k["name"] != "dispatch-host") {
        assert!(
            k["ms"].as_f64().is_some_and(|x| x > 0.0)
                && k["gflops"].as_f64().is_some_and(|x| x > 0.0),
            "{k}"
        );
    }
    let e = &v["end_to_end"];
    assert_eq!(e["steps"], 2);
    assert_eq!(
        (&e["stages"], &e["super_res_steps"]),
        (&1.into(), &0.into())
    );
    for key in ["text_ms", "step_ms", "decode_ms", "total_ms"] {
        assert!(e[key].as_f64().is_some_and(|x| x > 0.0), "{key}: {e}");
    }
    // The host's share of a phase: something, and no more than the phase's wall time.
    for (part, whole) in [("text_record_ms", "text_ms"), ("step_record_ms", "step_ms")] {
        let (part, whole) = (e[part].as_f64(), e[whole].as_f64());
        assert!(
            part.zip(whole).is_some_and(|(p, w)| p > 0.0 && p <= w),
            "{part:?} of {whole:?}: {e}"
        );
    }
    assert!(e["peak_bytes"].as_u64().is_some_and(|x| x > 0));
    assert!(v.get("pipeline_cache_loaded_bytes").is_some(), "{v}");
}

#[test]
fn any_unicode_prompt_is_written_into_the_png() {
    let model = fixture("tiny-b").join("model");
    for (i, prompt) in ["🍎 apple", "café au lait", "猫 cat", "plain ascii"]
        .iter()
        .enumerate()
    {
        let png = tmp(&format!("unicode-{i}.png"));
        let _ = std::fs::remove_file(&png);
        ok(&[
            "--render",
            s(&png),
            "--model",
            s(&model),
            "--prompt",
            prompt,
            "--negative-prompt",
            "ø",
            "--steps",
            "2",
            "--seed",
            "3",
        ]);
        let text = png_text(&png);
        assert!(text.starts_with(prompt), "{text:?}");
        assert!(text.contains("Negative prompt: ø"), "{text:?}");
    }
}

#[test]
fn images_are_read_by_content_not_name() {
    let dir = fixture("tiny-b");
    let model = dir.join("model");
    let input = dir.join("encode_input.png");
    let img = image::open(&input).expect("fixture").to_rgb8();
    // A PNG named .jpg, a real JPEG and a real WebP (lossless) are all accepted.
    let png_as_jpg = tmp("really-a-png.jpg");
    std::fs::copy(&input, &png_as_jpg).expect("copy");
    let jpeg = tmp("photo.jpeg");
    img.save_with_format(&jpeg, image::ImageFormat::Jpeg)
        .expect("jpeg");
    let webp = tmp("photo.webp");
    img.save_with_format(&webp, image::ImageFormat::WebP)
        .expect("webp");
    for path in [&png_as_jpg, &jpeg, &webp] {
        let out = tmp("by-content.png");
        let _ = std::fs::remove_file(&out);
        ok(&[
            "--render",
            s(&out),
            "--model",
            s(&model),
            "--image",
            s(path),
            "--strength",
            "0.5",
            "--steps",
            "2",
            "--seed",
            "1",
        ]);
        assert!(out.exists(), "{}", path.display());
    }
    // Text, and a format tessera does not decode: one line saying what it is.
    let text = tmp("notes.png");
    std::fs::write(&text, "not an image").expect("write");
    // A BMP header (tessera has no BMP decoder): identified by its magic bytes.
    let bmp = tmp("old.png");
    let mut header = b"BM".to_vec();
    header.resize(64, 0);
    std::fs::write(&bmp, &header).expect("write");
    for (path, expect) in [
        (&text, "not an image tessera recognises"),
        (&bmp, "BMP file"),
    ] {
        let out = tmp("never-by-content.png");
        let o = tessera(&[
            "--render",
            s(&out),
            "--model",
            s(&model),
            "--image",
            s(path),
            "--steps",
            "2",
        ]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{err}");
        assert!(
            err.contains(expect) && err.contains("PNG, JPEG, WebP or GIF"),
            "{err}"
        );
        assert!(!out.exists());
    }
}

#[test]
fn a_batch_over_the_adapters_buffer_limit_is_refused_before_work() {
    // The default model's logits are 256 tokens × 512 codes × 4 B = 512 KiB per image; 4096
    // images need 2 GiB in one binding, over every adapter's limit (Vulkan's is below 2 GiB).
    let out = tmp("too-many.png");
    let start = std::time::Instant::now();
    let o = tessera(&["--render", s(&out), "--batch", "4096", "--prompt", "x"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.lines()
            .any(|l| l.starts_with("Error: ") && l.contains("use a batch of at most")),
        "{err}"
    );
    assert!(!out.exists() && !tmp("too-many-1.png").exists());
    assert!(
        start.elapsed().as_secs() < 30,
        "refusal took {:?}",
        start.elapsed()
    );
}

#[test]
fn negative_numbers_are_values() {
    let model = fixture("tiny-b").join("model");
    let out = tmp("negative-guidance.png");
    let _ = std::fs::remove_file(&out);
    // Guidance ≤ 1 turns guidance off, as --help says.
    ok(&[
        "--render",
        s(&out),
        "--model",
        s(&model),
        "--guidance",
        "-5",
        "--steps",
        "2",
    ]);
    assert!(out.exists());
}

#[test]
fn colliding_outputs_and_overwritten_inputs_are_refused_before_work() {
    let dir = fixture("tiny-b");
    let model = dir.join("model");
    let input = tmp("collide-input.png");
    std::fs::copy(dir.join("encode_input.png"), &input).expect("copy");
    let same = tmp("same.png");
    let same_dotted = tmp(".").join("same.png");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["--render", s(&same), "--gif", s(&same_dotted)],
            "both name",
        ),
        (
            vec!["--render", s(&same), "--tokens-out", s(&same)],
            "both name",
        ),
        (
            vec![
                "--render",
                s(&input),
                "--image",
                s(&input),
                "--strength",
                "0.5",
            ],
            "would overwrite the input --image",
        ),
    ];
    for (args, expect) in cases {
        let _ = std::fs::remove_file(&same);
        let before = std::fs::read(&input).expect("read");
        let mut all = args.clone();
        all.extend(["--model", s(&model), "--steps", "2"]);
        let o = tessera(&all);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{all:?}: {err}");
        assert!(
            err.lines()
                .any(|l| l.starts_with("Error: ") && l.contains(expect)),
            "{err}"
        );
        assert!(!same.exists(), "{all:?} wrote an output");
        assert_eq!(
            std::fs::read(&input).expect("read"),
            before,
            "input changed"
        );
    }
}

#[test]
fn frames_folder_is_a_complete_set() {
    let model = fixture("tiny-b").join("model");
    let frames = tmp("frames-set");
    let _ = std::fs::remove_dir_all(&frames);
    let out = tmp("frames-set.png");
    let render = |steps: &str| {
        ok(&[
            "--render",
            s(&out),
            "--model",
            s(&model),
            "--frames",
            s(&frames),
            "--steps",
            steps,
        ]);
        let mut names: Vec<String> = std::fs::read_dir(&frames)
            .expect("frames")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    assert_eq!(render("6").len(), 6);
    // A shorter run leaves none of the longer run's frames behind.
    assert_eq!(render("3"), ["step-01.png", "step-02.png", "step-03.png"]);
    // A folder holding anything else is refused, and left as it was.
    std::fs::write(frames.join("notes.txt"), "mine").expect("write");
    let o = tessera(&[
        "--render",
        s(&out),
        "--model",
        s(&model),
        "--frames",
        s(&frames),
        "--steps",
        "2",
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("holds other files") && err.contains("notes.txt"),
        "{err}"
    );
    assert_eq!(std::fs::read_dir(&frames).expect("frames").count(), 4);
}

#[test]
fn unknown_backend_and_file_as_model_are_named() {
    let out = tmp("never-env.png");
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(["--render", s(&out), "--prompt", "x"])
        .env("WGPU_BACKEND", "bogus")
        .env("RUST_LOG", "error")
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("WGPU_BACKEND=\"bogus\" names no backend") && err.contains("vulkan"),
        "{err}"
    );
    let png = fixture("tiny-b").join("encode_input.png");
    let o = tessera(&["--render", s(&out), "--model", s(&png), "--prompt", "x"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("is a file, not a model folder"), "{err}");
    assert!(!out.exists());
}

#[test]
fn image_sizes_off_the_token_grid_are_resized_and_margins_refused_before_work() {
    // The default model's base stage (`--stages 1`; the super-resolution stage's positions fix
    // its size at 128 px): VQ factor 4, and its transformer halves the token grid, so sides
    // must be multiples of 8 px. A 68×64 image is resized to 64×64 (as diffusers' image
    // processor does) instead of failing mid-run; its mask (68×64, the file's size) goes with it.
    let img = tmp("off-grid.png");
    image::RgbImage::from_fn(68, 64, |x, y| {
        image::Rgb([(x * 3) as u8, (y * 4) as u8, 90])
    })
    .save(&img)
    .expect("save");
    let mask = tmp("off-grid-mask.png");
    image::GrayImage::from_fn(68, 64, |x, _| image::Luma([if x < 34 { 255 } else { 0 }]))
        .save(&mask)
        .expect("save");
    for extra in [vec!["--strength", "0.5"], vec!["--mask", s(&mask)]] {
        let out = tmp("off-grid-out.png");
        let _ = std::fs::remove_file(&out);
        let mut args = vec![
            "--render",
            s(&out),
            "--image",
            s(&img),
            "--steps",
            "2",
            "--seed",
            "1",
            "--stages",
            "1",
        ];
        args.extend(extra);
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_tessera"))
            .args(&args)
            .env("RUST_LOG", "warn")
            .output()
            .expect("run");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "{args:?}: {err}");
        assert!(err.contains("resizing 68×64 to 64×64"), "{err}");
        let got = image::open(&out).expect("png");
        assert_eq!((got.width(), got.height()), (64, 64));
    }
    // Outpaint margins the user typed are not adapted: refused, naming the rule.
    let out = tmp("off-grid-outpaint.png");
    let o = tessera(&[
        "--render",
        s(&out),
        "--image",
        s(&img),
        "--outpaint",
        "4,0,0,0",
        "--stages",
        "1",
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("multiple of 8 pixels"), "{err}");
    assert!(!out.exists());
}

/// Resident set size of this process in bytes (Linux; 0 elsewhere).
fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096)
}

/// Many renders in one process with the same settings: every image identical, GPU peak bytes
/// after the first render equal to the first's, host memory flat. CI runs 12 renders of a tiny
/// fixture; `SOAK_RENDERS=200 SOAK_MODEL=assets/models/emoji cargo test --release --test
/// render soak -- --nocapture` gives the figures for a real model.
#[test]
fn soak_same_settings_same_images_flat_memory() {
    use tessera_engine::pipeline;
    let n: usize = std::env::var("SOAK_RENDERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(12);
    let model = std::env::var("SOAK_MODEL").map_or_else(
        |_| fixture("tiny-b").join("model"),
        |m| Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(m),
    );
    let ctx = GpuContext::new().expect("adapter (apt-get install mesa-vulkan-drivers)");
    let pipe = Model::open(&ctx, &model).expect("load");
    let side = pipe.grid().0;
    let render = || {
        let req = blue_heart(side);
        let g = pipeline::generate(&ctx, &pipe, &req, &mut |_| ControlFlow::Continue(()))
            .expect("generate");
        let (img, _) = pipe.decode(&ctx, &g.tokens, 1, g.grid).expect("decode");
        (g.tokens, img)
    };
    let first = render();
    let peak_first = ctx.memory_stats().1;
    // Host memory settles after the first few renders (allocator, driver caches).
    let warm = 3.min(n);
    for _ in 1..warm {
        assert_eq!(render(), first, "same seed, different image");
    }
    let rss_warm = rss_bytes();
    let start = std::time::Instant::now();
    for i in warm..n {
        let got = render();
        assert!(got == first, "render {i}: same seed, different image");
        assert_eq!(
            ctx.memory_stats().1,
            peak_first,
            "render {i}: GPU peak grew"
        );
    }
    let rss_end = rss_bytes();
    let grew = rss_end.saturating_sub(rss_warm);
    eprintln!(
        "soak: {n} renders of {}, {:.1} ms each after warm-up; GPU peak {:.1} MiB throughout; \
         RSS {:.1} → {:.1} MiB",
        model.display(),
        start.elapsed().as_secs_f64() * 1e3 / (n - warm).max(1) as f64,
        peak_first as f64 / 1048576.0,
        rss_warm as f64 / 1048576.0,
        rss_end as f64 / 1048576.0
    );
    // Flat: a leak of even 64 KiB per render would show over the run.
    assert!(
        grew <= 4 << 20,
        "host memory grew {:.1} MiB over {} renders",
        grew as f64 / 1048576.0,
        n - warm
    );
}

/// Soft (anti-aliased, gradient, noisy, colour) masks become exactly the token grid diffusers'
/// inpainting pipeline makes: Pillow's 8-bit two-pass LANCZOS resize, bit for bit, then /255 ≥
/// 0.5 (fixtures: tools/fixtures/make_mask_fixtures.py). A float resize missed 2 of 36 tokens
/// on an anti-aliased mask.
/// The cases of a resize fixture (`tests/fixtures/masks/<file>`: name → fields) and its
/// folder.
fn resize_cases(file: &str) -> (PathBuf, serde_json::Map<String, serde_json::Value>) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/masks");
    let expect: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join(file)).expect("json"))
            .expect("parse");
    let cases = expect.as_object().expect("cases").clone();
    (dir, cases)
}

/// The whole numbers of `case[key]`.
fn case_ints(case: &serde_json::Value, key: &str) -> Vec<i64> {
    case[key]
        .as_array()
        .expect("array")
        .iter()
        .map(|v| v.as_i64().expect("int"))
        .collect()
}

#[test]
fn soft_masks_match_the_reference_bit_for_bit() {
    let (dir, cases) = resize_cases("expect.json");
    assert!(cases.len() >= 7);
    for (name, case) in &cases {
        let ints = |key: &str| case_ints(case, key);
        let grid = ints("grid");
        let grid = (grid[0] as usize, grid[1] as usize);
        let img = image::open(dir.join(format!("{name}.png"))).expect("mask png");
        let size = (img.width() as usize, img.height() as usize);
        let l8 = tessera::pil_resize::luma_l8(&img.to_rgb8());
        let resized = tessera::pil_resize::resize_lanczos_l8(&l8, size, grid);
        let want: Vec<u8> = ints("resized").into_iter().map(|v| v as u8).collect();
        assert_eq!(resized, want, "{name}: Pillow's resize");
        let got: Vec<i64> = tessera::pil_resize::mask_grid(&l8, size, grid)
            .into_iter()
            .map(i64::from)
            .collect();
        assert_eq!(got, ints("repaint"), "{name}: repainted tokens");
    }
}

/// Off-grid input images are resized to the model's multiples exactly as diffusers' image
/// processor resizes them (Pillow's LANCZOS on 8-bit RGB; fixtures:
/// tools/fixtures/make_mask_fixtures.py).
#[test]
fn off_grid_images_resize_as_the_reference_bit_for_bit() {
    let (dir, cases) = resize_cases("images.json");
    assert!(cases.len() >= 3);
    for (name, case) in &cases {
        let ints = |key: &str| -> Vec<usize> {
            case_ints(case, key)
                .into_iter()
                .map(|v| usize::try_from(v).expect("non-negative"))
                .collect()
        };
        let size = ints("size");
        let fitted = tessera::files::read_image_fitted(
            &dir.join(format!("image-{name}.png")),
            tessera::files::Fit::Multiple(8),
        )
        .expect("read");
        assert_eq!((fitted.width, fitted.height), (size[0], size[1]), "{name}");
        let (w, h) = (fitted.width, fitted.height);
        let want = ints("rgb");
        for (i, &v) in want.iter().enumerate() {
            let (y, x, c) = (i / (3 * w), i / 3 % w, i % 3);
            let got = fitted.pixels[(c * h + y) * w + x];
            assert_eq!(
                (got * 255.0).round() as usize,
                v,
                "{name}: pixel ({x}, {y}) channel {c}"
            );
        }
    }
}

/// A run stopped from its step callback (the app's Cancel button and Esc) returns
/// `Error::Cancelled` after that step, gives every buffer it took back to the pool, and leaves
/// the pipeline ready for the next run, which gives the same image as a fresh one.
#[test]
fn a_cancelled_run_stops_after_its_step_and_returns_its_buffers() {
    use tessera_engine::pipeline;
    let ctx = GpuContext::new().expect("adapter (apt-get install mesa-vulkan-drivers)");
    let pipe = Model::open(&ctx, &fixture("tiny-b").join("model")).expect("load");
    let side = pipe.grid().0;
    let req = blue_heart(side);
    let whole = |ctx: &GpuContext| {
        pipeline::generate(ctx, &pipe, &req, &mut |_| ControlFlow::Continue(()))
            .expect("generate")
            .tokens
    };
    let before = whole(&ctx);
    let live = ctx.memory_stats().0;
    for stop_after in [1, 3] {
        let mut seen = 0;
        let err = pipeline::generate(&ctx, &pipe, &req, &mut |ev| {
            seen += 1;
            assert_eq!(ev.step + 1, seen);
            if seen == stop_after {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })
        .expect_err("cancelled");
        assert_eq!(seen, stop_after, "steps after the cancel");
        assert!(
            matches!(err, tessera_engine::Error::Cancelled { step, steps }
                if step == stop_after && steps == req.sampler.steps),
            "{err}"
        );
        assert_eq!(ctx.memory_stats().0, live, "buffers held after the cancel");
    }
    assert_eq!(whole(&ctx), before, "a run after a cancel differs");
}

/// Out of GPU memory for real: the driver's allocation fails (lavapipe's memory is the
/// process's, capped here with `ulimit -v`) and the CLI prints one `Error:` line naming the
/// tensor, exits 1 and writes nothing.
#[cfg(target_os = "linux")]
#[test]
fn out_of_gpu_memory_is_one_error_line_and_no_file() {
    let dir = tmp("oom");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let png = dir.join("out.png");
    // 1 GB of address space: the engine and driver start, a batch of 120 does not fit. (The
    // default model's base stage without guidance: its logits, 120 MiB, pass the binding-size
    // check that refuses larger batches before any work.)
    let o = std::process::Command::new("bash")
        .arg("-c")
        .arg(r#"ulimit -v 1000000 && exec "$0" "$@""#)
        .arg(env!("CARGO_BIN_EXE_tessera"))
        .args([
            "--render",
            s(&png),
            "--batch",
            "120",
            "--steps",
            "1",
            "--seed",
            "3",
            "--stages",
            "1",
            "--guidance",
            "1",
        ])
        .env("RUST_LOG", "error")
        .output()
        .expect("run tessera");
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "stderr:\n{err}");
    let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("Error:")).collect();
    assert_eq!(errors.len(), 1, "stderr:\n{err}");
    assert!(errors[0].contains("out of GPU memory"), "{}", errors[0]);
    assert!(!err.contains("panicked"), "stderr:\n{err}");
    let left: Vec<_> = std::fs::read_dir(&dir).expect("dir").collect();
    assert!(left.is_empty(), "files written: {left:?}");
}

/// The device lost in the middle of a run (a real `Device::destroy` from the step callback, as
/// a driver reset would do) ends the run with `Error::DeviceLost`, the error the app turns
/// into its restart offer, without a panic; a new context renders again.
#[test]
fn a_device_lost_mid_run_is_device_lost_and_a_new_context_renders() {
    use tessera_engine::pipeline;
    let folder = fixture("tiny-b").join("model");
    let run = |ctx: &GpuContext, lose_at: Option<usize>| {
        let pipe = Model::open(ctx, &folder).expect("load");
        let side = pipe.grid().0;
        let req = blue_heart(side);
        pipeline::generate(ctx, &pipe, &req, &mut |ev| {
            if Some(ev.step) == lose_at {
                ctx.device.destroy();
            }
            ControlFlow::Continue(())
        })
        .map(|g| g.tokens)
    };
    let ctx = GpuContext::new().expect("adapter (apt-get install mesa-vulkan-drivers)");
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(&ctx, Some(1))));
    match result {
        Ok(Err(e @ tessera_engine::Error::DeviceLost { .. })) => eprintln!("{e}"),
        Ok(Err(e)) => panic!("a lost device gave another error: {e}"),
        Ok(Ok(_)) => panic!("a destroyed device finished the run"),
        Err(_) => panic!("a lost device panicked"),
    }
    drop(ctx);
    let again = GpuContext::new().expect("adapter");
    assert!(run(&again, None).is_ok(), "a new context failed");
}

/// The driver's pipeline cache is persisted under the user cache folder for the next process,
/// `TESSERA_PIPELINE_CACHE=0` leaves it alone, and a damaged cache file is ignored: every run
/// renders the same image.
#[test]
fn the_pipeline_cache_persists_and_a_damaged_one_is_ignored() {
    let cache = tmp("pipeline-cache-home");
    let _ = std::fs::remove_dir_all(&cache);
    let model = fixture("tiny-b").join("model");
    let render = |png: &Path, extra: &[(&str, &str)]| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_tessera"));
        cmd.args([
            "--render",
            s(png),
            "--model",
            s(&model),
            "--prompt",
            "blue heart",
        ])
        .args(["--seed", "4", "--steps", "3"])
        .env("XDG_CACHE_HOME", &cache)
        .env("RUST_LOG", "error");
        for (k, v) in extra {
            cmd.env(k, v);
        }
        let o = cmd.output().expect("run");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        std::fs::read(png).expect("png")
    };
    let dir = cache.join("tessera/pipelines");
    let first = render(&tmp("pc-off.png"), &[("TESSERA_PIPELINE_CACHE", "0")]);
    assert!(!dir.exists(), "TESSERA_PIPELINE_CACHE=0 wrote a cache");
    let ctx = GpuContext::new().expect("adapter");
    let has_cache = ctx.features().contains(wgpu::Features::PIPELINE_CACHE)
        && wgpu::util::pipeline_cache_key(&ctx.info).is_some();
    drop(ctx);
    assert_eq!(render(&tmp("pc-1.png"), &[]), first);
    let files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    if has_cache {
        assert_eq!(files.len(), 1, "{files:?}");
        assert!(std::fs::metadata(&files[0]).expect("file").len() > 0);
        assert_eq!(render(&tmp("pc-2.png"), &[]), first, "from the cache");
        std::fs::write(&files[0], b"not a pipeline cache").expect("damage");
        assert_eq!(render(&tmp("pc-3.png"), &[]), first, "damaged cache");
    } else {
        assert!(files.is_empty(), "{files:?}");
    }
}

/// Settings travel with images: image k of `--batch N` records its own seed (seed + k) and
/// `--from-png` redoes it alone, byte for byte; options given beside `--from-png` override it;
/// AUTOMATIC1111-style text maps where its fields do; a PNG without settings is refused.
#[test]
fn from_png_redoes_any_image_of_a_batch_and_reads_automatic1111_text() {
    let dir = tmp("from-png");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let model = fixture("tiny-b").join("model");
    let batch = dir.join("b.png");
    ok(&[
        "--render",
        s(&batch),
        "--model",
        s(&model),
        "--prompt",
        "blue heart",
        "--seed",
        "5",
        "--steps",
        "3",
        "--guidance",
        "3",
        "--batch",
        "3",
    ]);
    for k in 1..=3 {
        let image = dir.join(format!("b-{k}.png"));
        let text = png_text(&image);
        assert!(text.contains(&format!("Seed: {}", 4 + k)), "{text}");
        let again = dir.join(format!("again-{k}.png"));
        ok(&["--render", s(&again), "--from-png", s(&image)]);
        assert_eq!(
            std::fs::read(&again).expect("again"),
            std::fs::read(&image).expect("image"),
            "image {k} of the batch, redone alone"
        );
    }
    let changed = dir.join("changed.png");
    ok(&[
        "--render",
        s(&changed),
        "--from-png",
        s(&dir.join("b-1.png")),
        "--steps",
        "2",
    ]);
    let text = png_text(&changed);
    assert!(
        text.contains("Steps: 2") && text.contains("Seed: 5"),
        "{text}"
    );

    // Another tool's text: its sampler is not tessera's (skipped), the rest maps.
    let a1111 = dir.join("a1111.png");
    let params = "red apple\nNegative prompt: dull\nSteps: 3, Sampler: Euler a, CFG scale: 2, \
                  Seed: 42, Size: 512x512, Model hash: 1234abcd, Model: sd15";
    let text = std::collections::HashMap::from([("parameters".to_owned(), params.to_owned())]);
    std::fs::write(
        &a1111,
        tessera::files::png_bytes(&[0.5; 3 * 8 * 8], 8, 8, &text).expect("png"),
    )
    .expect("write");
    let from_a1111 = dir.join("from-a1111.png");
    ok(&[
        "--render",
        s(&from_a1111),
        "--from-png",
        s(&a1111),
        "--model",
        s(&model),
    ]);
    let text = png_text(&from_a1111);
    for want in [
        "red apple\n",
        "Negative prompt: dull",
        "Steps: 3",
        "CFG scale: 2",
        "Seed: 42",
    ] {
        assert!(text.contains(want), "{want:?} not in {text:?}");
    }
    assert!(text.contains("Sampler: amused"), "{text}");

    let plain = dir.join("plain.png");
    image::RgbImage::new(8, 8).save(&plain).expect("save");
    let o = tessera(&[
        "--render",
        s(&dir.join("never.png")),
        "--from-png",
        s(&plain),
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("no `parameters` text"), "{err}");
}

/// `tessera convert IN.pt OUT.safetensors` writes a file the loaders read; it refuses to
/// overwrite its input and names an unreadable one.
#[test]
fn convert_writes_safetensors_from_a_torch_checkpoint() {
    let input = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/torch/state_dict.pt");
    let out = tmp("converted.safetensors");
    ok(&["convert", s(&input), s(&out)]);
    let ckpt = tessera_engine::io::Checkpoint::open(std::slice::from_ref(&out)).expect("read back");
    assert_eq!(ckpt.shape("a.weight"), Some(&[3, 4][..]));
    let o = tessera(&["convert", s(&out), s(&out)]);
    assert_eq!(o.status.code(), Some(1));
    let bad = tmp("bad.pt");
    std::fs::write(&bad, b"PK\x03\x04 not really").expect("write");
    let o = tessera(&["convert", s(&bad), s(&tmp("never.safetensors"))]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("bad.pt") && err.starts_with("Error:"), "{err}");
}

/// `tessera info` says first what kind of adapter runs the kernels; on this project's machine
/// that is lavapipe, a software adapter, and the line says how to get speed.
#[test]
fn info_says_whether_a_gpu_or_a_software_adapter_runs_the_kernels() {
    let o = tessera(&["info"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let first = out.lines().next().unwrap_or_default();
    assert!(first.starts_with("GPU: "), "{out}");
    let software = out.contains("llvmpipe") || out.contains("SwiftShader");
    if software {
        assert!(
            first.contains("software adapter") && first.contains("driver"),
            "{first}"
        );
    } else {
        assert!(first.contains("hardware adapter"), "{first}");
    }
    assert!(out.contains("kernels: "), "{out}");
}

/// Files served from memory (`io::files::mount`, the browser's way to hold fetched or dropped
/// files) open a model exactly as its folder on disk does: the same tokens and pixels. Off the
/// mount the path no longer exists; a PyTorch file held in memory is refused with the way out.
#[test]
fn a_model_mounted_in_memory_opens_like_its_folder() {
    use tessera_engine::io::files::{self, MemoryFiles};
    use tessera_engine::pipeline;
    let disk = fixture("tiny-a").join("model");
    let mem = Path::new("/tessera-memory-test/tiny-a");
    files::mount(mem, MemoryFiles::from_dir(&disk).expect("read folder"));
    let ctx = GpuContext::new().expect("adapter");
    let run = |path: &Path| {
        let model = Model::open(&ctx, path).expect("open");
        let g = pipeline::generate(&ctx, &model, &blue_heart(model.grid().0), &mut |_| {
            ControlFlow::Continue(())
        })
        .expect("generate");
        let (img, _) = model.decode(&ctx, &g.tokens, 1, g.grid).expect("decode");
        (g.tokens, img)
    };
    assert_eq!(run(mem), run(&disk));
    files::unmount(mem);
    assert!(Model::open(&ctx, mem).is_err(), "unmounted files are gone");
    let paella = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/paella/v3-a/model");
    let mem = Path::new("/tessera-memory-test/paella");
    files::mount(mem, MemoryFiles::from_dir(&paella).expect("read folder"));
    let err = Model::open(&ctx, mem)
        .err()
        .expect("a .pt in memory is refused");
    assert!(err.to_string().contains("tessera convert"), "{err}");
    files::unmount(mem);
}

/// The awaited forms (the browser's: no readback blocks) give what the blocking ones give:
/// generation, an inpainting start (its image encoded and read back), and decoding.
#[test]
fn awaited_readbacks_give_the_blocking_results() {
    use tessera_engine::Readback;
    use tessera_engine::pipeline::{self, Start};
    let ctx = GpuContext::new().expect("adapter");
    let model = Model::open(&ctx, &fixture("tiny-b").join("model")).expect("open");
    let side = model.grid().0;
    let blank = blue_heart(side);
    let f = model.vq_factor();
    let image: Vec<f32> = (0..3 * side * f * side * f)
        .map(|i| ((i * 29) % 97) as f32 / 96.0)
        .collect();
    let mut inpaint = blue_heart(side);
    inpaint.start = Start::Inpaint {
        image,
        size: (side * f, side * f),
        mask: (0..side * side).map(|i| i % side < side / 2).collect(),
    };
    for req in [&blank, &inpaint] {
        let mut steps = (0, 0);
        let sync = pipeline::generate(&ctx, &model, req, &mut |_| {
            steps.0 += 1;
            ControlFlow::Continue(())
        })
        .expect("generate");
        let awaited = pollster::block_on(pipeline::generate_async(&ctx, &model, req, &mut |_| {
            steps.1 += 1;
            ControlFlow::Continue(())
        }))
        .expect("generate_async");
        assert_eq!(awaited.tokens, sync.tokens);
        assert_eq!(steps.0, steps.1);
        let a = model
            .decode(&ctx, &sync.tokens, 1, sync.grid)
            .expect("decode");
        let b = pollster::block_on(model.decode_with(
            &ctx,
            &sync.tokens,
            1,
            sync.grid,
            Readback::Await,
        ))
        .expect("decode_with");
        assert_eq!(a, b);
    }
}

/// A run that times kernels (the GPU kernel family forced, tuning kept in memory) ends with
/// one line saying so, which is why it took longer than the next run will; with tuning off it
/// has no such line. Batch mode says the same.
#[test]
fn a_run_that_times_kernels_says_so() {
    let model = fixture("tiny-b").join("model");
    for (tune, says) in [("memory", true), ("0", false)] {
        let out = tmp(&format!("tuning-{tune}.png"));
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_tessera"))
            .args(["--render", s(&out), "--model", s(&model)])
            .args(["--prompt", "blue heart", "--steps", "2"])
            .env("TESSERA_KERNELS", "tiled")
            .env("TESSERA_TUNE", tune)
            .output()
            .expect("run");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "TESSERA_TUNE={tune}: {err}");
        let line = err.lines().find(|l| l.starts_with("timed the kernels of"));
        assert_eq!(line.is_some(), says, "TESSERA_TUNE={tune}: {err}");
        if let Some(line) = line {
            assert!(
                line.contains("on this GPU") && line.ends_with("(kept for this process only)"),
                "{line}"
            );
        }
    }
}
