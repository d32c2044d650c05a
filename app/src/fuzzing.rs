//! One function per input format tessera reads, taking arbitrary bytes: each must return (an
//! `Ok` or an error) and never panic, abort or allocate without bound. `fuzz/` drives them with
//! libFuzzer; `tests/fuzz_corpus.rs` replays the saved corpus on the stable toolchain.

use std::path::Path;

use tessera_engine::io::Checkpoint;
use tessera_engine::io::flax::FlaxFile;

/// A safetensors checkpoint: the header, then every tensor's values as a model would read
/// them (f32 and kept-f16).
pub fn safetensors_checkpoint(bytes: &[u8]) {
    let Ok(ckpt) = Checkpoint::from_bytes(vec![("fuzz.safetensors".into(), bytes.to_vec())]) else {
        return;
    };
    let names: Vec<String> = ckpt.names().map(str::to_owned).collect();
    for name in names {
        if let Some(shape) = ckpt.shape(&name).map(<[usize]>::to_vec) {
            let _ = ckpt.values(&name, &shape, true);
            let _ = ckpt.values(&name, &shape, false);
        }
    }
}

/// Model configs (`config.json` of each component) as the loaders parse and validate them.
pub fn model_config(bytes: &[u8]) {
    use tessera_engine::models::amused::{uvit2d, vq};
    use tessera_engine::models::clip_text;
    let Ok(text) = std::str::from_utf8(bytes) else {
        return;
    };
    let path = Path::new("config.json");
    if let Ok(c) = serde_json::from_str::<uvit2d::Config>(text) {
        let _ = c.validate(path);
    }
    if let Ok(c) = serde_json::from_str::<vq::Config>(text)
        && c.validate(path).is_ok()
    {
        let _ = c.scale_factor();
    }
    let _ = serde_json::from_str::<clip_text::Config>(text);
}

/// A MaskGIT Flax msgpack checkpoint (`to_bytes` format).
pub fn flax_checkpoint(bytes: &[u8]) {
    if let Ok(f) = FlaxFile::parse(bytes, "fuzz") {
        let names: Vec<String> = f.names().map(str::to_owned).collect();
        for n in names {
            let _ = f.shape(&n);
        }
    }
}

/// A token file (`--tokens`, `decode`).
pub fn token_file(bytes: &[u8]) {
    let _ = crate::files::parse_tokens(bytes, "tokens", Path::new("fuzz.safetensors"));
}

/// An input image or mask (`--image`, `--mask`, `encode`).
pub fn image_file(bytes: &[u8]) {
    if let Ok(img) = crate::files::decode_image(bytes, Path::new("fuzz.png"), "image") {
        let _ = img.to_rgb8();
    }
}

/// A PyTorch `.pt` checkpoint (ZIP or legacy), read as the loaders read it: every tensor's
/// values. The reader takes a path, so the bytes go through a temporary file (one per thread).
pub fn torch_checkpoint(bytes: &[u8]) {
    let path = std::env::temp_dir().join(format!(
        "tessera-fuzz-{}-{:?}.pt",
        std::process::id(),
        std::thread::current().id()
    ));
    if std::fs::write(&path, bytes).is_err() {
        return;
    }
    if let Ok(ckpt) = Checkpoint::open_torch(&path) {
        let names: Vec<String> = ckpt.names().map(str::to_owned).collect();
        for name in names {
            if let Some(shape) = ckpt.shape(&name).map(<[usize]>::to_vec) {
                let _ = ckpt.values(&name, &shape, true);
            }
        }
    }
    let _ = std::fs::remove_file(&path);
}
