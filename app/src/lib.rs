//! The `tessera` CLI and app's library side: its file readers and writers, and the entry points
//! the fuzz targets (`fuzz/`) and their corpus replay test (`tests/fuzz_corpus.rs`) share.

pub mod files;
pub mod fuzzing;
pub mod pil_resize;
