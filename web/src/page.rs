//! The page around the canvas: URL parameters, the title, the result image, fetches.

use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;

fn window() -> Option<web_sys::Window> {
    web_sys::window()
}

/// The canvas egui draws on (`<canvas id="tessera">`).
pub fn canvas() -> Option<web_sys::HtmlCanvasElement> {
    window()?
        .document()?
        .get_element_by_id("tessera")?
        .dyn_into()
        .ok()
}

/// A parameter of the page's URL (`?prompt=…`).
pub fn param(name: &str) -> Option<String> {
    let search = window()?.location().search().ok()?;
    web_sys::UrlSearchParams::new_with_str(&search)
        .ok()?
        .get(name)
}

/// Sets the title to "tessera" followed by `suffix` (` — done`, ` — error: …`, progress).
pub fn set_title_suffix(suffix: &str) {
    if let Some(doc) = window().and_then(|w| w.document()) {
        doc.set_title(&format!("tessera{suffix}"));
    }
}

/// Shows `png` in `<img id="result">` as a `data:` URL (so the page's DOM holds the image
/// itself, for whoever drives the page).
pub fn show_result(png: &[u8]) -> Result<(), String> {
    use base64::Engine;
    let img: web_sys::HtmlImageElement = element("result")?
        .dyn_into()
        .map_err(|_| "#result is not an <img>")?;
    let b64 = base64::engine::general_purpose::STANDARD.encode(png);
    img.set_src(&format!("data:image/png;base64,{b64}"));
    Ok(())
}

/// Writes `text` into the element `id` (`<pre id="steps">`: tokens fixed per step).
pub fn set_text(id: &str, text: &str) {
    if let Ok(e) = element(id) {
        e.set_text_content(Some(text));
    }
}

fn element(id: &str) -> Result<web_sys::Element, String> {
    window()
        .and_then(|w| w.document())
        .ok_or("no document")?
        .get_element_by_id(id)
        .ok_or_else(|| format!("the page has no #{id}"))
}

/// The bytes at `url` (relative to the page), through the browser's cache.
pub async fn fetch(url: &str) -> Result<Vec<u8>, String> {
    let w = window().ok_or("no window")?;
    let resp: web_sys::Response = JsFuture::from(w.fetch_with_str(url))
        .await
        .map_err(|e| format!("{url}: {e:?}"))?
        .dyn_into()
        .map_err(|_| format!("{url}: not a response"))?;
    if !resp.ok() {
        return Err(format!("{url}: HTTP {}", resp.status()));
    }
    let buf = JsFuture::from(resp.array_buffer().map_err(|e| format!("{url}: {e:?}"))?)
        .await
        .map_err(|e| format!("{url}: {e:?}"))?;
    Ok(js_sys::Uint8Array::new(&buf).to_vec())
}
