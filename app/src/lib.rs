//! The `tessera` CLI and app's library side: the app (`gui`, on the desktop and, built by
//! `web/`, in the browser), the render job and model opening it shares with the CLI (`render`,
//! `hub`, `embedded`), the file readers and writers, and the entry points the fuzz targets
//! (`fuzz/`) and their corpus replay test (`tests/fuzz_corpus.rs`) share.

pub mod embedded;
pub mod files;
pub mod fuzzing;
pub mod gui;
pub mod hub;
pub mod pil_resize;
pub mod render;
