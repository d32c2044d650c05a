//! tessera in the browser: the engine on WebGPU behind an egui page (eframe's web runner).
//!
//! The page fetches the default model's files from `models/emoji/` beside it (listed in
//! `files.json`, cached by the browser), serves them to the engine from memory
//! (`tessera_engine::io::files::mount`), opens its own WebGPU device and generates with the
//! awaited pipeline (`pipeline::generate_async`: no readback blocks the page), showing the
//! token grid fill in step by step. `?prompt=…&seed=…&steps=…&run=1` runs one generation on
//! load; when it ends the PNG is in `<img id="result">` and the title ends with ` — done` (or
//! ` — error: <message>`), so the page can be driven and checked from its URL.
//!
//! Only for `wasm32`; elsewhere the crate is empty.
#![cfg(target_arch = "wasm32")]

mod app;
mod page;

use wasm_bindgen::prelude::*;

/// The page's entry point: starts egui on the canvas `#tessera`.
#[wasm_bindgen(start)]
pub fn start() {
    console_error_panic_hook::set_once();
    wasm_bindgen_futures::spawn_local(async {
        let Some(canvas) = page::canvas() else {
            page::set_title_suffix(" — error: the page has no canvas #tessera");
            return;
        };
        let runner = eframe::WebRunner::new();
        let started = runner
            .start(
                canvas,
                eframe::WebOptions::default(),
                Box::new(|cc| Ok(Box::new(app::App::new(cc)))),
            )
            .await;
        if let Err(e) = started {
            page::set_title_suffix(&format!(" — error: {e:?}"));
        }
    });
}
