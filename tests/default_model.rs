//! The embedded default model (assets/models/emoji): tessera with no `--model` matches diffusers
//! on it (fixtures from tools/fixtures/make_emoji_fixtures.py) and draws the emoji a prompt
//! names.

mod common;

use common::*;

use std::path::{Path, PathBuf};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/emoji")
        .join(name)
}

fn prompt() -> String {
    let case: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("case.json")).expect("case.json"))
            .expect("json");
    case["prompt"].as_str().expect("prompt").to_owned()
}

fn field(path: &Path, key: &str) -> (Vec<usize>, Vec<f64>) {
    read(path)
        .remove(key)
        .unwrap_or_else(|| panic!("{} has no {key}", path.display()))
}

/// `key` of `out` has the shape of the fixture's and is within 1e-4 relative error of it.
fn assert_matches_fixture(out: &Path, fixture_file: &str, key: &str) {
    let (gs, got) = field(out, key);
    let (ws, want) = field(&fixture(fixture_file), key);
    assert_eq!(gs, ws, "{key}: shape");
    let e = rel_err(&got, &want);
    assert!(e < 1e-4, "{key}: relative error {e:.2e}");
}

#[test]
fn forward_matches_diffusers() {
    let out = tmp("default-forward.safetensors");
    ok(&[
        "forward",
        "--tokens",
        s(&fixture("tokens_masked.safetensors")),
        "--prompt",
        &prompt(),
        "--out",
        s(&out),
    ]);
    assert_matches_fixture(&out, "forward.safetensors", "logits");
}

#[test]
fn decode_and_encode_match_diffusers() {
    let (png, raw) = (tmp("default-decode.png"), tmp("default-decode.safetensors"));
    ok(&[
        "decode",
        "--tokens",
        s(&fixture("tokens_full.safetensors")),
        "--out",
        s(&png),
        "--raw",
        s(&raw),
    ]);
    assert_matches_fixture(&raw, "decode.safetensors", "image");

    let enc = tmp("default-encode.safetensors");
    ok(&[
        "encode",
        "--image",
        s(&fixture("encode_input.png")),
        "--out",
        s(&enc),
    ]);
    assert_eq!(
        field(&enc, "tokens"),
        field(&fixture("encode.safetensors"), "tokens")
    );
}

/// Mean RGB of the pixels that are not background (near white).
fn ink_colour(path: &Path) -> [f64; 3] {
    let img = image::open(path).expect("png").to_rgb8();
    let mut sum = [0.0f64; 3];
    let mut n = 0.0;
    for p in img.pixels() {
        if p.0.iter().any(|&c| c < 200) {
            for (s, &c) in sum.iter_mut().zip(&p.0) {
                *s += f64::from(c);
            }
            n += 1.0;
        }
    }
    assert!(
        n > 0.05 * f64::from(img.width() * img.height()),
        "{}: almost nothing drawn",
        path.display()
    );
    sum.map(|s| s / n)
}

#[test]
fn prompts_that_name_an_emoji_get_its_colour() {
    // Same seed for every prompt: only the text differs. (The small model gets colours right far
    // more reliably than shapes; see its model card.)
    let cases: [(&str, usize); 2] = [("blue heart", 2), ("red apple", 0)];
    for (prompt, channel) in cases {
        let out = tmp(&format!("default-{}.png", prompt.replace(' ', "-")));
        ok(&["--render", s(&out), "--prompt", prompt, "--seed", "3"]);
        let c = ink_colour(&out);
        let others = (0..3).filter(|&i| i != channel).map(|i| c[i]);
        assert!(
            others.clone().all(|o| c[channel] > o + 20.0),
            "{prompt:?}: mean colour {c:?} is not dominated by channel {channel}"
        );
    }
}
