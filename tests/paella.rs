//! Paella parity: the inspection subcommands on the committed fixture folders
//! (tests/fixtures/paella, made by tools/fixtures/make_paella_fixtures.py with the official
//! dome272/Paella modules, transformers' T5 and CLIP) must reproduce the reference outputs;
//! renders run through the one pipeline; bad folders fail with one `Error:` line.

mod common;

use common::*;

use std::path::{Path, PathBuf};

const V3: [&str; 2] = ["v3-a", "v3-b"];
const V1: [&str; 2] = ["v1-a", "v1-b"];
const ALL: [&str; 4] = ["v3-a", "v3-b", "v1-a", "v1-b"];

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/paella")
}

fn case_json(case: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(fixtures().join(case).join("case.json")).expect("case.json");
    serde_json::from_str(&text).expect("case.json parses")
}

fn prompt(case: &str) -> String {
    case_json(case)["prompt"]
        .as_str()
        .expect("prompt")
        .to_owned()
}

/// `got[name]` against `want[want_name]`: same shape, max-norm relative error within `tol`.
fn close(case: &str, got: &Path, want: &Path, name: &str, want_name: &str, tol: f64) {
    let (got, want) = (read(got), read(want));
    let (gs, gv) = &got[name];
    let (ws, wv) = &want[want_name];
    assert_eq!(gs, ws, "{case}: {name} shape");
    let e = rel_err(gv, wv);
    eprintln!("{case}: {name} relative error {e:.2e}");
    assert!(e <= tol, "{case}: {name} relative error {e:.2e} > {tol:e}");
}

fn exact(case: &str, got: &Path, want: &Path, name: &str, want_name: &str) {
    let (got, want) = (read(got), read(want));
    assert_eq!(got[name], want[want_name], "{case}: {name}");
}

#[test]
fn embed_text_matches_transformers() {
    for case in ALL {
        let v3 = V3.contains(&case);
        let dir = fixtures().join(case);
        for (text, reference) in [
            (prompt(case), "embed_text.safetensors"),
            (String::new(), "embed_text_empty.safetensors"),
        ] {
            let out = tmp(&format!("{case}-embed.safetensors"));
            ok(&[
                "embed-text",
                "--model",
                s(&dir.join("model")),
                "--prompt",
                &text,
                "--out",
                s(&out),
            ]);
            let want = dir.join(reference);
            if v3 {
                exact(case, &out, &want, "byt5_input_ids", "byt5_input_ids");
                close(case, &out, &want, "byt5", "byt5", 1e-4);
            } else {
                assert!(!read(&out).contains_key("byt5"), "{case}: v1 has no ByT5");
            }
            exact(case, &out, &want, "clip_input_ids", "clip_input_ids");
            close(case, &out, &want, "clip", "clip", 1e-4);
        }
    }
}

#[test]
fn forward_matches_official_generator() {
    for case in ALL {
        let dir = fixtures().join(case);
        let r = case_json(case)["r"].as_f64().expect("r").to_string();
        let want = dir.join("forward.safetensors");
        let out = tmp(&format!("{case}-forward.safetensors"));
        ok(&[
            "forward",
            "--model",
            s(&dir.join("model")),
            "--tokens",
            s(&want),
            "--prompt",
            &prompt(case),
            "--noise-level",
            &r,
            "--out",
            s(&out),
        ]);
        close(case, &out, &want, "logits", "logits", 1e-3);
        if V1.contains(&case) {
            // v1's unconditional branch is an all-zero embedding, not a prompt's: the renders
            // run it.
            continue;
        }
        // The unconditional branch: the empty prompt's embeddings.
        ok(&[
            "forward",
            "--model",
            s(&dir.join("model")),
            "--tokens",
            s(&want),
            "--prompt",
            "",
            "--noise-level",
            &r,
            "--out",
            s(&out),
        ]);
        close(case, &out, &want, "logits", "logits_uncond", 1e-3);
    }
}

#[test]
fn decode_and_encode_match_official_vqgan() {
    for case in ALL {
        let dir = fixtures().join(case);
        let model = dir.join("model");
        let want = dir.join("decode.safetensors");
        let (png, raw) = (
            tmp(&format!("{case}-decode.png")),
            tmp(&format!("{case}-decode.safetensors")),
        );
        ok(&[
            "decode",
            "--model",
            s(&model),
            "--tokens",
            s(&want),
            "--out",
            s(&png),
            "--raw",
            s(&raw),
        ]);
        close(case, &raw, &want, "image", "image", 1e-4);
        let out = tmp(&format!("{case}-encode.safetensors"));
        ok(&[
            "encode",
            "--model",
            s(&model),
            "--image",
            s(&dir.join("encode_input.png")),
            "--out",
            s(&out),
        ]);
        exact(
            case,
            &out,
            &dir.join("encode.safetensors"),
            "tokens",
            "tokens",
        );
    }
}

/// `--render` through the one pipeline: each version's published defaults are what the PNG
/// records, the same seed gives the same bytes, and img2img, inpainting and outpainting run.
#[test]
fn renders_with_published_defaults_and_edits() {
    render_case("v3-b", &["CFG scale: 8", "Softmax temperature: 1:0.2"]);
    render_case(
        "v1-b",
        &[
            "CFG scale: 5",
            "Softmax temperature: 1:1",
            "Typical mass: 0.2",
        ],
    );
}

fn render_case(case: &str, defaults: &[&str]) {
    let model = fixtures().join(case).join("model");
    let m = s(&model);
    let a = tmp(&format!("{case}-a.png"));
    let b = tmp(&format!("{case}-b.png"));
    for out in [&a, &b] {
        ok(&[
            "--render",
            s(out),
            "--model",
            m,
            "--prompt",
            "café",
            "--seed",
            "4",
        ]);
    }
    let bytes = std::fs::read(&a).expect("png");
    assert_eq!(
        bytes,
        std::fs::read(&b).expect("png"),
        "same seed, same image"
    );
    let text = String::from_utf8_lossy(&bytes);
    for want in ["Steps: 12", "Sampler: paella"].iter().chain(defaults) {
        assert!(text.contains(want), "settings text lacks {want:?}");
    }
    assert!(!text.contains("Schedule:"), "Paella has no mask schedule");
    // img2img from the render; inpainting with a mask of the left half; outpainting.
    let i2i = tmp(&format!("{case}-i2i.png"));
    ok(&[
        "--render",
        s(&i2i),
        "--model",
        m,
        "--prompt",
        "tea",
        "--image",
        s(&a),
        "--strength",
        "0.5",
    ]);
    let mask = tmp(&format!("{case}-mask.png"));
    let (w, h) = image::image_dimensions(&a).expect("render png");
    let img =
        image::GrayImage::from_fn(w, h, |x, _| image::Luma([if x < w / 2 { 255 } else { 0 }]));
    img.save(&mask).expect("mask png");
    let inpaint = tmp(&format!("{case}-inpaint.png"));
    ok(&[
        "--render",
        s(&inpaint),
        "--model",
        m,
        "--prompt",
        "tea",
        "--image",
        s(&a),
        "--mask",
        s(&mask),
    ]);
    let outpaint = tmp(&format!("{case}-outpaint.png"));
    ok(&[
        "--render",
        s(&outpaint),
        "--model",
        m,
        "--prompt",
        "tea",
        "--image",
        s(&a),
        "--outpaint",
        "64,0,0,0",
    ]);
    let size = image::image_dimensions(&outpaint).expect("outpaint png");
    assert_eq!(size, (w + 64, h));
}

/// Runs and expects one `Error:` line naming `needle`, exit 1, and no output file.
fn fails(args: &[&str], out: &Path, needle: &str) {
    let o = tessera(args);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("Error:")).collect();
    assert_eq!(lines.len(), 1, "{args:?}: one Error: line, got:\n{err}");
    assert!(
        lines[0].contains(needle),
        "{args:?}: {:?} does not name {needle:?}",
        lines[0]
    );
    assert!(!out.exists(), "{args:?}: wrote {}", out.display());
}

/// A copy of the v3-a folder, altered by `edit`.
fn broken(name: &str, edit: impl FnOnce(&Path)) -> PathBuf {
    let dir = tmp(name);
    let _ = std::fs::remove_dir_all(&dir);
    copy_dir(&fixtures().join("v3-a/model"), &dir);
    edit(&dir);
    dir
}

/// Rewrites the generator as safetensors with `change` applied to its tensors.
fn rewrite_generator(dir: &Path, change: impl FnOnce(&mut Vec<(String, Vec<usize>, Vec<f32>)>)) {
    let pt = dir.join("paella_v3.pt");
    let st = dir.join("generator.safetensors");
    ok(&["convert", s(&pt), s(&st)]);
    std::fs::remove_file(&pt).expect("rm");
    let mut tensors: Vec<(String, Vec<usize>, Vec<f32>)> = read(&st)
        .into_iter()
        .map(|(n, (shape, v))| (n, shape, v.into_iter().map(|x| x as f32).collect()))
        .collect();
    change(&mut tensors);
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
        .iter()
        .map(|(n, shape, v)| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(
                    safetensors::Dtype::F32,
                    shape.clone(),
                    bytemuck::cast_slice(v),
                )
                .expect("view"),
            )
        })
        .collect();
    safetensors::serialize_to_file(views, None, &st).expect("write");
}

#[test]
fn bad_folders_fail_with_one_line() {
    let out = tmp("paella-bad.png");
    let _ = std::fs::remove_file(&out);
    let render = |dir: &Path| -> Vec<String> {
        [
            "--render",
            s(&out),
            "--model",
            s(dir),
            "--prompt",
            "x",
            "--steps",
            "2",
        ]
        .iter()
        .map(|a| (*a).to_owned())
        .collect()
    };
    let run = |dir: &Path, needle: &str| {
        let args = render(dir);
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        fails(&refs, &out, needle);
    };
    // A truncated generator: named with the file.
    let d = broken("pa-truncated", |d| {
        let p = d.join("paella_v3.pt");
        let bytes = std::fs::read(&p).expect("read");
        std::fs::write(&p, &bytes[..bytes.len() / 2]).expect("write");
    });
    run(&d, "paella_v3.pt");
    // A generator whose tensor is built by a constructor the reader does not know.
    let d = broken("pa-global", |d| {
        std::fs::copy(
            fixtures().join("bad/quantized_generator.pt"),
            d.join("paella_v3.pt"),
        )
        .expect("copy");
    });
    run(&d, "torch.QInt8Storage");
    // No VQGAN beside the generator.
    let d = broken("pa-no-vq", |d| {
        std::fs::remove_file(d.join("vqgan_f4.pt")).expect("rm")
    });
    run(&d, "VQGAN");
    // No text encoder (and no hub cache holding one).
    let d = broken("pa-no-byt5", |d| {
        std::fs::remove_dir_all(d.join("byt5")).expect("rm")
    });
    let args = render(&d);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(&refs)
        .env("HF_HUB_CACHE", tmp("empty-hub"))
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("byt5") && err.contains("google/byt5-xl"),
        "{err}"
    );
    assert!(!out.exists());
    // A state dict missing a key, and one with a wrong shape: the key is named.
    let d = broken("pa-missing-key", |d| {
        rewrite_generator(d, |t| t.retain(|(n, _, _)| n != "clf.1.bias"))
    });
    run(&d, "clf.1.bias");
    let d = broken("pa-bad-shape", |d| {
        rewrite_generator(d, |t| {
            for (n, shape, v) in t.iter_mut() {
                if n == "out_mapper.1.weight" {
                    shape[1] += 1;
                    v.extend(std::iter::repeat_n(0.0, shape[0] * shape[2] * shape[3]));
                }
            }
        })
    });
    run(&d, "out_mapper.1.weight");
    // Options Paella does not take.
    let model = fixtures().join("v3-a/model");
    fails(
        &["--render", s(&out), "--model", s(&model), "--class", "3"],
        &out,
        "--class",
    );
}

/// Guidance schedules through the engine: with Paella's `first:N` the unconditional branch
/// stops after N steps (the later steps issue fewer dispatches), and the PNG records the
/// schedule.
#[test]
fn guidance_schedule_first_n_stops_the_unconditional_branch() {
    use std::ops::ControlFlow;
    use tessera_engine::GpuContext;
    use tessera_engine::pipeline::{self, Condition, Model, Request, Start};
    use tessera_engine::sampling::GuidanceSchedule;
    let ctx = GpuContext::new().expect("adapter");
    let model = Model::open(&ctx, &fixtures().join("v3-b/model")).expect("open");
    let mut sampler = model.sampler_defaults(None, 3, false).expect("defaults");
    sampler.steps = 4;
    sampler.guidance_schedule = GuidanceSchedule::First(2);
    let req = Request {
        condition: Condition::Text {
            prompt: "tea",
            negative_prompt: "",
        },
        batch: 1,
        guidance: 8.0,
        sampler,
        start: Start::Blank((8, 16)),
        super_res: Default::default(),
    };
    let mut dispatches = Vec::new();
    pipeline::generate(&ctx, &model, &req, &mut |ev| {
        dispatches.push(ev.work.dispatches);
        ControlFlow::Continue(())
    })
    .expect("generate");
    assert_eq!(dispatches.len(), 4);
    assert!(
        dispatches[2] * 3 < dispatches[1] * 2 && dispatches[3] == dispatches[2],
        "guided steps then conditional-only steps: {dispatches:?}"
    );
    let out = tmp("paella-first2.png");
    ok(&[
        "--render",
        s(&out),
        "--model",
        s(&fixtures().join("v3-b/model")),
        "--prompt",
        "tea",
        "--steps",
        "3",
        "--guidance-schedule",
        "first:2",
    ]);
    let text = String::from_utf8_lossy(&std::fs::read(&out).expect("png")).into_owned();
    assert!(text.contains("Guidance schedule: first:2"), "{text}");
}

/// Mask-free editing: every iteration re-masks its fraction and resamples it, the steps of
/// all iterations are reported in order, and tokens outside the re-masked positions stay the
/// image's.
#[test]
fn mask_free_editing_resamples_random_subsets() {
    use std::ops::ControlFlow;
    use tessera_engine::GpuContext;
    use tessera_engine::pipeline::{self, Condition, Model, Request, Start};
    let ctx = GpuContext::new().expect("adapter");
    let model = Model::open(&ctx, &fixtures().join("v3-b/model")).expect("open");
    let (gh, gw) = (8, 16);
    let f = model.vq_factor();
    let (w, h) = (gw * f, gh * f);
    let image: Vec<f32> = (0..3 * w * h)
        .map(|i| ((i * 37) % 101) as f32 / 100.0)
        .collect();
    let (ids, _) = model.encode(&ctx, &image, (w, h)).expect("encode");
    let mut sampler = model.sampler_defaults(None, 9, false).expect("defaults");
    sampler.steps = 3;
    let req = Request {
        condition: Condition::Text {
            prompt: "tea",
            negative_prompt: "",
        },
        batch: 1,
        guidance: 8.0,
        sampler,
        start: Start::Edit {
            image,
            size: (w, h),
            iterations: 2,
            fraction: 0.25,
        },
        super_res: Default::default(),
    };
    let mut steps = Vec::new();
    let out = pipeline::generate(&ctx, &model, &req, &mut |ev| {
        steps.push((ev.step, ev.steps));
        ControlFlow::Continue(())
    })
    .expect("edit");
    assert_eq!(steps, (0..6).map(|i| (i, 6)).collect::<Vec<_>>());
    let changed = out.tokens.iter().zip(&ids).filter(|(a, b)| a != b).count();
    let per = gh * gw;
    assert!(changed > 0, "the edit changed nothing");
    assert!(
        changed <= 2 * per / 4,
        "{changed} of {per} changed: more than two quarters"
    );
    // The CLI takes it with --image only.
    let src = tmp("paella-edit-src.png");
    ok(&[
        "--render",
        s(&src),
        "--model",
        s(&fixtures().join("v3-b/model")),
        "--prompt",
        "tea",
        "--steps",
        "2",
    ]);
    let edited = tmp("paella-edit.png");
    ok(&[
        "--render",
        s(&edited),
        "--model",
        s(&fixtures().join("v3-b/model")),
        "--prompt",
        "tea",
        "--steps",
        "2",
        "--image",
        s(&src),
        "--edit",
        "2:0.3",
    ]);
    let bad = tmp("paella-edit-bad.png");
    let _ = std::fs::remove_file(&bad);
    fails(
        &[
            "--render",
            s(&bad),
            "--model",
            s(&fixtures().join("v3-b/model")),
            "--prompt",
            "tea",
            "--image",
            s(&src),
            "--edit",
            "2:0.3",
            "--strength",
            "0.5",
        ],
        &bad,
        "--edit",
    );
}

/// The hub's LAION CLIP folders are full `CLIPModel`s: their config nests the text tower's
/// under `text_config` with `projection_dim` at the top. Such a `clip/` gives the same
/// embedding.
#[test]
fn a_full_clip_model_folder_gives_the_text_embedding() {
    let dir = broken("pa-clipmodel", |d| {
        let path = d.join("clip/config.json");
        let text: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).expect("read")).expect("json");
        let mut tower = text.clone();
        let projection = tower
            .as_object_mut()
            .and_then(|o| o.remove("projection_dim"))
            .expect("projection_dim");
        let full = serde_json::json!({
            "architectures": ["CLIPModel"],
            "model_type": "clip",
            "projection_dim": projection,
            "text_config": tower,
            "vision_config": {"hidden_size": 32},
        });
        std::fs::write(&path, full.to_string()).expect("write");
    });
    let out = tmp("pa-clipmodel.safetensors");
    ok(&[
        "embed-text",
        "--model",
        s(&dir),
        "--prompt",
        &prompt("v3-a"),
        "--out",
        s(&out),
    ]);
    let want = fixtures().join("v3-a/embed_text.safetensors");
    close("v3-a CLIPModel", &out, &want, "clip", "clip", 1e-4);
}
