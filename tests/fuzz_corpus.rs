//! Replays the fuzz corpus (`fuzz/corpus/<target>/*`, seeds from the fixtures plus what
//! libFuzzer found that widened coverage) and every saved crash (`fuzz/regressions/<target>/*`)
//! through the same entry points as the fuzz targets, on the stable toolchain: each must
//! return without panicking.

use std::path::Path;

type Target = fn(&[u8]);

const TARGETS: [(&str, Target); 6] = [
    (
        "safetensors_checkpoint",
        tessera::fuzzing::safetensors_checkpoint,
    ),
    ("model_config", tessera::fuzzing::model_config),
    ("flax_checkpoint", tessera::fuzzing::flax_checkpoint),
    ("token_file", tessera::fuzzing::token_file),
    ("image_file", tessera::fuzzing::image_file),
    ("torch_checkpoint", tessera::fuzzing::torch_checkpoint),
];

fn replay(kind: &str, name: &str, run: Target) -> usize {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz")
        .join(kind)
        .join(name);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return 0;
    };
    let mut n = 0;
    for e in entries {
        let path = e.expect("corpus entry").path();
        let bytes = std::fs::read(&path).expect("read corpus file");
        let outcome = std::panic::catch_unwind(|| run(&bytes));
        assert!(outcome.is_ok(), "{name}: {} panicked", path.display());
        n += 1;
    }
    n
}

#[test]
fn every_corpus_input_and_saved_crash_is_handled() {
    for (name, run) in TARGETS {
        let seeds = replay("corpus", name, run);
        let crashes = replay("regressions", name, run);
        eprintln!("{name}: {seeds} corpus inputs, {crashes} saved crashes");
        assert!(seeds > 0, "{name}: no corpus in fuzz/corpus/{name}");
    }
}

/// The readers refuse what they should, not only survive it.
#[test]
fn malformed_inputs_are_errors() {
    use tessera::files::{decode_image, parse_tokens};
    let p = Path::new("x");
    assert!(parse_tokens(b"", "tokens", p).is_err());
    assert!(parse_tokens(&[0xff; 64], "tokens", p).is_err());
    assert!(decode_image(b"", p, "image").is_err());
    assert!(decode_image(b"\x89PNG\r\n\x1a\n broken", p, "image").is_err());
    // A safetensors header whose tensor claims more bytes than its shape needs.
    let header = br#"{"t":{"dtype":"F32","shape":[2],"data_offsets":[0,12]}}"#;
    let mut file = (header.len() as u64).to_le_bytes().to_vec();
    file.extend_from_slice(header);
    file.extend_from_slice(&[0; 12]);
    let err = tessera_engine::io::Checkpoint::from_bytes(vec![("bad".into(), file)]);
    assert!(
        err.is_err(),
        "a 2-element f32 tensor of 12 bytes was accepted"
    );
}
