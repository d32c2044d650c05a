//! `tessera --render` end to end on the committed tiny fixture pipelines, and classifier-free
//! guidance against separate conditional/unconditional passes.

mod common;

use common::*;

use std::path::{Path, PathBuf};

use tessera_engine::GpuContext;
use tessera_engine::Tensor;
use tessera_engine::io::ModelFolder;
use tessera_engine::models::amused::AmusedPipeline;
use tessera_engine::pipeline::GuidedTransformer;
use tessera_engine::sampling::TokenModel;

fn fixture(case: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/amused")
        .join(case)
}

fn png_text(path: &Path) -> String {
    let dec = png::Decoder::new(std::io::BufReader::new(
        std::fs::File::open(path).expect("open"),
    ));
    let reader = dec.read_info().expect("png");
    reader
        .info()
        .uncompressed_latin1_text
        .iter()
        .find(|t| t.keyword == "parameters")
        .map(|t| t.text.clone())
        .expect("parameters chunk")
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
        r#"{ "guidance_scale": 3.5, "steps": 4, "choice_temperature": [0.5, 0.0] }"#,
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
    for want in ["Steps: 4", "CFG scale: 3.5", "Choice temperature: 0.5:0"] {
        assert!(text.contains(want), "parameters {text:?} lack {want:?}");
    }
    let text = run(&[
        "--steps",
        "3",
        "--guidance",
        "2",
        "--choice-temperature",
        "1:0",
    ]);
    for want in ["Steps: 3", "CFG scale: 2", "Choice temperature: 1:0"] {
        assert!(text.contains(want), "parameters {text:?} lack {want:?}");
    }
    // A misspelt key is one error naming the file, and nothing is written.
    std::fs::write(&settings, r#"{ "guidance": 3 }"#).expect("write");
    let _ = std::fs::remove_file(&png);
    let args = render(&[]);
    let o = tessera(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "a bad tessera.json was accepted");
    assert!(
        err.contains("tessera.json") && err.contains("guidance"),
        "{err}"
    );
    assert!(!png.exists(), "left {}", png.display());
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
        let m = GuidedTransformer::new(&ctx, &pipe, prompt, negative, 1, s, grid).expect("model");
        let mut rec = ctx.recorder();
        let l = m.logits(&mut rec, &tokens).expect("logits");
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
    let o = tessera(&[
        "bench", "--json", "--sizes", "32", "--budget", "0", "--steps", "2",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value =
        serde_json::from_slice(&o.stdout).expect("one JSON object on stdout");
    assert!(v["adapter"]["name"].is_string() && v["adapter"]["backend"].is_string());
    let kernels = v["kernels"].as_array().expect("kernels");
    assert!(kernels.iter().any(|k| k["name"] == "matmul"
        && k["shape"] == serde_json::json!([32, 32, 32])
        && k["dtype"] == "f16"));
    for k in kernels {
        assert!(
            k["ms"].as_f64().is_some_and(|x| x > 0.0)
                && k["gflops"].as_f64().is_some_and(|x| x > 0.0),
            "{k}"
        );
    }
    let e = &v["end_to_end"];
    assert_eq!(e["steps"], 2);
    for key in ["text_ms", "step_ms", "decode_ms", "total_ms"] {
        assert!(e[key].as_f64().is_some_and(|x| x > 0.0), "{key}: {e}");
    }
    assert!(e["peak_bytes"].as_u64().is_some_and(|x| x > 0));
}
