//! aMUSEd parity: the inspection subcommands on the committed fixture pipelines
//! (tests/fixtures/amused, made by tools/fixtures/make_amused_fixtures.py with diffusers and
//! transformers) must reproduce the reference outputs, and bad input must fail cleanly.

mod common;

use common::*;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use safetensors::{Dtype, SafeTensors};

const CASES: [&str; 2] = ["tiny-a", "tiny-b"];

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/amused")
}

fn compare(
    case: &str,
    what: &str,
    got: &HashMap<String, (Vec<usize>, Vec<f64>)>,
    want: &HashMap<String, (Vec<usize>, Vec<f64>)>,
    name: &str,
    tol: f64,
) {
    let (gs, gv) = &got[name];
    let (ws, wv) = &want[name];
    assert_eq!(gs, ws, "{case} {what}: {name} shape");
    let e = rel_err(gv, wv);
    eprintln!("{case} {what}: {name} relative error {e:.2e}");
    assert!(
        e <= tol,
        "{case} {what}: {name} relative error {e:.2e} > {tol:e}"
    );
}

fn case_json(case: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(fixtures().join(case).join("case.json")).expect("case.json");
    serde_json::from_str(&text).expect("case.json parses")
}

#[test]
fn embed_text_matches_transformers() {
    for case in CASES {
        let dir = fixtures().join(case);
        let prompt = case_json(case)["prompt"]
            .as_str()
            .expect("prompt")
            .to_owned();
        let out = tmp(&format!("{case}-embed.safetensors"));
        ok(&[
            "embed-text",
            "--model",
            s(&dir.join("model")),
            "--prompt",
            &prompt,
            "--out",
            s(&out),
        ]);
        let (got, want) = (read(&out), read(&dir.join("embed_text.safetensors")));
        assert_eq!(got["input_ids"], want["input_ids"], "{case}: input_ids");
        compare(case, "embed-text", &got, &want, "pooled", 1e-4);
        compare(case, "embed-text", &got, &want, "hidden", 1e-4);
        // The empty negative prompt the pipeline uses for guidance.
        ok(&[
            "embed-text",
            "--model",
            s(&dir.join("model")),
            "--prompt",
            "",
            "--out",
            s(&out),
        ]);
        let (got, want) = (
            read(&out),
            read(&dir.join("embed_text_negative.safetensors")),
        );
        assert_eq!(
            got["input_ids"], want["input_ids"],
            "{case}: negative input_ids"
        );
        compare(case, "embed-text \"\"", &got, &want, "pooled", 1e-4);
    }
}

#[test]
fn tokenizer_edge_cases_match_transformers() {
    for case in CASES {
        let dir = fixtures().join(case);
        let text = std::fs::read_to_string(dir.join("tokenizer_cases.json"))
            .expect("tokenizer_cases.json");
        let cases: serde_json::Value = serde_json::from_str(&text).expect("json");
        let tok = tessera_engine::models::clip_tokenizer::ClipTokenizer::from_dir(
            &dir.join("model/tokenizer"),
        )
        .expect("tokenizer");
        let list = cases
            .as_array()
            .or_else(|| cases["cases"].as_array())
            .expect("list of cases");
        assert!(!list.is_empty());
        for c in list {
            let t = c["text"].as_str().expect("text");
            let want: Vec<u32> = c["input_ids"]
                .as_array()
                .expect("ids")
                .iter()
                .map(|v| v.as_u64().expect("id") as u32)
                .collect();
            assert_eq!(tok.encode(t).expect("encode"), want, "{case}: {t:?}");
        }
    }
}

#[test]
fn forward_matches_diffusers() {
    for case in CASES {
        let dir = fixtures().join(case);
        let prompt = case_json(case)["prompt"]
            .as_str()
            .expect("prompt")
            .to_owned();
        let out = tmp(&format!("{case}-logits.safetensors"));
        ok(&[
            "forward",
            "--model",
            s(&dir.join("model")),
            "--tokens",
            s(&dir.join("tokens_masked.safetensors")),
            "--prompt",
            &prompt,
            "--out",
            s(&out),
        ]);
        compare(
            case,
            "forward",
            &read(&out),
            &read(&dir.join("forward.safetensors")),
            "logits",
            1e-3,
        );
    }
}

#[test]
fn decode_matches_diffusers() {
    for case in CASES {
        let dir = fixtures().join(case);
        let (png, raw) = (
            tmp(&format!("{case}-decode.png")),
            tmp(&format!("{case}-decode.safetensors")),
        );
        ok(&[
            "decode",
            "--model",
            s(&dir.join("model")),
            "--tokens",
            s(&dir.join("tokens_full.safetensors")),
            "--out",
            s(&png),
            "--raw",
            s(&raw),
        ]);
        compare(
            case,
            "decode",
            &read(&raw),
            &read(&dir.join("decode.safetensors")),
            "image",
            1e-3,
        );
        let got = image::open(&png).expect("png").to_rgb8();
        let want = image::open(dir.join("decode.png")).expect("png").to_rgb8();
        assert_eq!(got.dimensions(), want.dimensions());
        let worst = got
            .as_raw()
            .iter()
            .zip(want.as_raw())
            .map(|(a, b)| a.abs_diff(*b))
            .max()
            .unwrap_or(0);
        assert!(worst <= 1, "{case}: PNG differs by {worst} levels");
    }
}

#[test]
fn encode_matches_diffusers() {
    for case in CASES {
        let dir = fixtures().join(case);
        let out = tmp(&format!("{case}-encode.safetensors"));
        ok(&[
            "encode",
            "--model",
            s(&dir.join("model")),
            "--image",
            s(&dir.join("encode_input.png")),
            "--out",
            s(&out),
        ]);
        let (got, want) = (read(&out), read(&dir.join("encode.safetensors")));
        assert_eq!(got["tokens"], want["tokens"], "{case}: tokens");
    }
}

/// Runs a failing command: exit ≠ 0, one `Error:` line on stderr, no output file.
fn fails(args: &[&str], out: &Path, expect: &str) {
    let _ = std::fs::remove_file(out);
    let o = tessera(args);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{args:?} succeeded");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{args:?}: want one error line, got:\n{err}");
    assert!(
        lines[0].starts_with("Error: ") && lines[0].contains(expect),
        "{args:?}: {err}"
    );
    assert!(!out.exists(), "{args:?} left {}", out.display());
}

#[test]
fn bad_input_is_one_error_line_and_no_file() {
    let dir = fixtures().join("tiny-a");
    let model = dir.join("model");
    let out = tmp("bad.safetensors");
    let png = tmp("bad.png");
    // Token id past the codebook.
    let bad_tokens = tmp("bad_tokens.safetensors");
    let mut ids = vec![0i64; 16];
    ids[5] = 30;
    let bytes = safetensors::serialize(
        [(
            "tokens",
            safetensors::tensor::TensorView::new(
                Dtype::I64,
                vec![1, 4, 4],
                bytemuck::cast_slice(&ids),
            )
            .expect("view"),
        )],
        None,
    )
    .expect("serialize");
    std::fs::write(&bad_tokens, bytes).expect("write");
    fails(
        &[
            "decode",
            "--model",
            s(&model),
            "--tokens",
            s(&bad_tokens),
            "--out",
            s(&png),
        ],
        &png,
        "tokens[5] = 30",
    );
    // Wrong tensor name.
    fails(
        &[
            "decode",
            "--model",
            s(&model),
            "--tokens",
            s(&dir.join("embed_text.safetensors")),
            "--out",
            s(&png),
        ],
        &png,
        "no tensor \"tokens\"",
    );
    // Not a safetensors file.
    fails(
        &[
            "forward",
            "--model",
            s(&model),
            "--tokens",
            s(&dir.join("case.json")),
            "--out",
            s(&out),
        ],
        &out,
        "not a valid safetensors file",
    );
    // Image of the wrong size (15 is not a multiple of 4).
    let small = tmp("small.png");
    image::RgbImage::new(15, 16).save(&small).expect("save");
    fails(
        &[
            "encode",
            "--model",
            s(&model),
            "--image",
            s(&small),
            "--out",
            s(&out),
        ],
        &out,
        "multiples of 4",
    );
    // Not an image.
    fails(
        &[
            "encode",
            "--model",
            s(&model),
            "--image",
            s(&dir.join("case.json")),
            "--out",
            s(&out),
        ],
        &out,
        "not an image tessera recognises",
    );
    // Missing model.
    fails(
        &[
            "embed-text",
            "--model",
            s(&dir.join("nope")),
            "--prompt",
            "x",
            "--out",
            s(&out),
        ],
        &out,
        "no such model folder",
    );
}

#[test]
fn broken_weights_name_the_tensor_and_file() {
    let src = fixtures().join("tiny-a/model");
    let dst = tmp("broken-model");
    let _ = std::fs::remove_dir_all(&dst);
    copy_dir(&src, &dst);
    // Drop one tensor from the VQ weights.
    let path = dst.join("vqvae/diffusion_pytorch_model.safetensors");
    let bytes = std::fs::read(&path).expect("read");
    let st = SafeTensors::deserialize(&bytes).expect("st");
    let kept: Vec<(String, safetensors::tensor::TensorView<'_>)> = st
        .tensors()
        .into_iter()
        .filter(|(n, _)| n != "decoder.conv_in.bias")
        .collect();
    std::fs::write(
        &path,
        safetensors::serialize(kept, None).expect("serialize"),
    )
    .expect("write");
    let png = tmp("broken.png");
    fails(
        &[
            "decode",
            "--model",
            s(&dst),
            "--tokens",
            s(&fixtures().join("tiny-a/tokens_full.safetensors")),
            "--out",
            s(&png),
        ],
        &png,
        "decoder.conv_in.bias",
    );
    // Truncate the transformer weights.
    let tpath = dst.join("transformer/diffusion_pytorch_model.safetensors");
    let tb = std::fs::read(&tpath).expect("read");
    std::fs::write(&tpath, &tb[..tb.len() / 2]).expect("write");
    let out = tmp("broken.safetensors");
    fails(
        &[
            "forward",
            "--model",
            s(&dst),
            "--tokens",
            s(&fixtures().join("tiny-a/tokens_masked.safetensors")),
            "--out",
            s(&out),
        ],
        &out,
        "diffusion_pytorch_model.safetensors",
    );
}

#[test]
fn hub_ids_resolve_from_the_local_cache() {
    let home = tmp("hf-home");
    let _ = std::fs::remove_dir_all(&home);
    let repo = home.join("hub/models--tess--tiny-a");
    copy_dir(
        &fixtures().join("tiny-a/model"),
        &repo.join("snapshots/0123abc"),
    );
    std::fs::create_dir_all(repo.join("refs")).expect("refs");
    std::fs::write(repo.join("refs/main"), "0123abc\n").expect("ref");
    let out = tmp("hub-embed.safetensors");
    let o = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args([
            "embed-text",
            "--model",
            "tess/tiny-a",
            "--prompt",
            "a red apple",
            "--out",
            s(&out),
        ])
        .env("HF_HOME", &home)
        .env_remove("HF_HUB_CACHE")
        .output()
        .expect("run");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let want = read(&fixtures().join("tiny-a/embed_text.safetensors"));
    assert_eq!(read(&out)["input_ids"], want["input_ids"]);
    // An id that is not cached is a clear error.
    let o = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args([
            "embed-text",
            "--model",
            "tess/absent",
            "--prompt",
            "x",
            "--out",
            s(&out),
        ])
        .env("HF_HOME", &home)
        .env_remove("HF_HUB_CACHE")
        .output()
        .expect("run");
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("Hugging Face cache"));
}

#[test]
fn sharded_and_variant_weight_files_load() {
    let dst = tmp("sharded-model");
    let _ = std::fs::remove_dir_all(&dst);
    copy_dir(&fixtures().join("tiny-a/model"), &dst);
    // Transformer: two shards plus an index, as save_pretrained(max_shard_size=…) writes them.
    let tdir = dst.join("transformer");
    let single = tdir.join("diffusion_pytorch_model.safetensors");
    let bytes = std::fs::read(&single).expect("read");
    let st = SafeTensors::deserialize(&bytes).expect("st");
    let mut all = st.tensors();
    all.sort_by(|a, b| a.0.cmp(&b.0));
    let half = all.len() / 2;
    let mut map = serde_json::Map::new();
    for (i, part) in [&all[..half], &all[half..]].into_iter().enumerate() {
        let name = format!("diffusion_pytorch_model-0000{}-of-00002.safetensors", i + 1);
        for (n, _) in part {
            map.insert(n.clone(), serde_json::Value::String(name.clone()));
        }
        std::fs::write(
            tdir.join(&name),
            safetensors::serialize(part.to_vec(), None).expect("ser"),
        )
        .expect("write");
    }
    let index = serde_json::json!({ "metadata": {}, "weight_map": map });
    std::fs::write(
        tdir.join("diffusion_pytorch_model.safetensors.index.json"),
        index.to_string(),
    )
    .expect("index");
    std::fs::remove_file(&single).expect("rm");
    // Text encoder: only the `.fp16` variant file present.
    let te = dst.join("text_encoder");
    std::fs::rename(
        te.join("model.safetensors"),
        te.join("model.fp16.safetensors"),
    )
    .expect("rename");
    let out = tmp("sharded-logits.safetensors");
    ok(&[
        "forward",
        "--model",
        s(&dst),
        "--tokens",
        s(&fixtures().join("tiny-a/tokens_masked.safetensors")),
        "--prompt",
        "a red apple",
        "--out",
        s(&out),
    ]);
    compare(
        "tiny-a",
        "forward (sharded)",
        &read(&out),
        &read(&fixtures().join("tiny-a/forward.safetensors")),
        "logits",
        1e-3,
    );
}
