//! The app library's readers and fuzz entry points, compiled from their sources in app/src.
#![allow(dead_code)]

#[path = "../../app/src/files.rs"]
pub mod files;
#[path = "../../app/src/fuzzing.rs"]
pub mod fuzzing;
#[path = "../../app/src/pil_resize.rs"]
pub mod pil_resize;
