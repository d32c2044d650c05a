//! tessera in the browser: the desktop app's code ([`tessera::gui`]) compiled to WebAssembly,
//! drawing and computing on the page's WebGPU device. The panels, the platform differences and
//! the page's URL and result hooks are all in `tessera::gui` (`platform`, `page`); this crate
//! is only the page's entry point. `tools/web/build.sh` builds it into `target/web/`.
//!
//! Only for `wasm32`; elsewhere the crate is empty.
#![cfg(target_arch = "wasm32")]

use wasm_bindgen::prelude::*;

/// The page's entry point: starts the app on the canvas `#tessera`.
#[wasm_bindgen(start)]
pub fn start() {
    tessera::gui::start_web();
}
