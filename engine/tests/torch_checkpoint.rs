//! PyTorch `.pt` checkpoints read without executing anything (fixtures:
//! tools/fixtures/make_torch_fixtures.py, written by torch): the ZIP format with f32, f16 and
//! bf16 tensors and a strided view, a Lightning-style file whose other objects are skipped, the
//! legacy format, and an unknown tensor constructor refused by name.

use std::path::{Path, PathBuf};

use tessera_engine::io::Checkpoint;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/torch")
        .join(name)
}

/// Every floating-point tensor of `ckpt` equals torch's own f32 values of it.
fn assert_matches_torch(ckpt: &Checkpoint, what: &str) {
    let expect = Checkpoint::open(&[fixture("expect.safetensors")]).expect("expect");
    let names: Vec<String> = expect.names().map(str::to_owned).collect();
    assert_eq!(names.len(), 3, "{names:?}");
    for name in names {
        let shape = expect.shape(&name).expect("shape").to_vec();
        assert_eq!(ckpt.shape(&name), Some(&shape[..]), "{what}: {name} shape");
        let want = expect
            .values(&name, &shape, false)
            .expect("want")
            .into_f32();
        let got = ckpt.values(&name, &shape, false).expect("got").into_f32();
        assert_eq!(got, want, "{what}: {name}");
    }
    assert_eq!(ckpt.shape("steps"), Some(&[][..]), "{what}: the i64 scalar");
}

#[test]
fn zip_legacy_and_lightning_checkpoints_load() {
    for (file, what) in [
        ("state_dict.pt", "state dict"),
        ("legacy.pt", "legacy format"),
        ("lightning.ckpt", "Lightning checkpoint"),
    ] {
        let ckpt = Checkpoint::open_torch(&fixture(file)).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_matches_torch(&ckpt, what);
        assert!(
            ckpt.names()
                .all(|n| !n.starts_with("state_dict.") && !n.contains("cfg")),
            "{what}: {:?}",
            ckpt.names().collect::<Vec<_>>()
        );
    }
    assert!(Checkpoint::looks_like_torch(
        &std::fs::read(fixture("state_dict.pt")).expect("read")
    ));
    assert!(Checkpoint::looks_like_torch(
        &std::fs::read(fixture("legacy.pt")).expect("read")
    ));
    assert!(!Checkpoint::looks_like_torch(
        &std::fs::read(fixture("expect.safetensors")).expect("read")
    ));
}

#[test]
fn unknown_tensor_constructors_and_broken_files_are_named_errors() {
    let err = Checkpoint::open_torch(&fixture("quantized.pt"))
        .err()
        .expect("a quantized tensor");
    // The first unknown global on the way to the tensor: its storage type.
    assert!(err.to_string().contains("torch.QInt8Storage"), "{err}");
    assert!(err.to_string().contains("quantized.pt"), "{err}");
    let dir = std::env::temp_dir().join(format!("tessera-torch-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let whole = std::fs::read(fixture("state_dict.pt")).expect("read");
    for (name, bytes) in [
        ("truncated.pt", whole[..whole.len() / 2].to_vec()),
        ("empty.pt", Vec::new()),
        ("text.pt", b"not a checkpoint".to_vec()),
    ] {
        let path = dir.join(name);
        std::fs::write(&path, &bytes).expect("write");
        let err = Checkpoint::open_torch(&path).err().expect("refused");
        assert!(err.to_string().contains(name), "{err}");
    }
}

/// A component folder holding only a PyTorch `.bin` (as older diffusers and transformers
/// folders do) loads through the same path as safetensors.
#[test]
fn a_component_with_a_bin_file_loads_it() {
    let dir = std::env::temp_dir().join(format!("tessera-torch-bin-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::copy(
        fixture("state_dict.pt"),
        dir.join("diffusion_pytorch_model.bin"),
    )
    .expect("copy");
    let files = tessera_engine::io::checkpoint::component_files(&dir, &["diffusion_pytorch_model"])
        .expect("found");
    assert_eq!(files, [dir.join("diffusion_pytorch_model.bin")]);
    let ckpt = Checkpoint::open(&files).expect("open");
    assert_matches_torch(&ckpt, ".bin component");
}

/// `tessera convert`'s conversion: the safetensors form holds every tensor with its dtype and
/// values (the i64 scalar included).
#[test]
fn a_torch_checkpoint_converts_to_safetensors() {
    let ckpt = Checkpoint::open_torch(&fixture("lightning.ckpt")).expect("open");
    let bytes = ckpt.to_safetensors().expect("convert");
    let back = Checkpoint::from_bytes(vec![("converted.safetensors".into(), bytes)]).expect("read");
    assert_eq!(
        back.names().collect::<Vec<_>>(),
        ckpt.names().collect::<Vec<_>>()
    );
    assert_matches_torch(&back, "converted");
    assert!(Checkpoint::synthetic(1).to_safetensors().is_err());
}
