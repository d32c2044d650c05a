//! The page around the app in the browser (built by `web/`): its URL, title, result image,
//! downloads, and folders dropped on it.
//!
//! The page can be driven from its URL: every parameter but `run` and `hub` is the command
//! line's option of that name (`?prompt=red+apple&seed=3&steps=12` is
//! `--prompt "red apple" --seed 3 --steps 12`, checked by the same parser), `run=1` starts one
//! generation once the model is open, and `hub=URL` names another hub. While it works the title
//! ends with ` — running`; when the first lane ends, `<img id="result">` holds its PNG (with its
//! settings text), `<pre id="steps">` the tokens fixed per step, and the title ends with
//! ` — done`; or ` — error: <message>` when the model cannot open or the run fails.
//! `<pre id="model">` names the open model.

use std::sync::Mutex;

use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;

use super::ScreenshotArgs;
use super::runs::Runs;
use super::session::Session;
use crate::render::RenderArgs;

fn window() -> Option<web_sys::Window> {
    web_sys::window()
}

fn document() -> Option<web_sys::Document> {
    window()?.document()
}

fn element(id: &str) -> Result<web_sys::Element, String> {
    document()
        .ok_or("no document")?
        .get_element_by_id(id)
        .ok_or_else(|| format!("the page has no #{id}"))
}

fn params() -> Option<web_sys::UrlSearchParams> {
    let search = window()?.location().search().ok()?;
    web_sys::UrlSearchParams::new_with_str(&search).ok()
}

/// A parameter of the page's URL (`?hub=…`).
pub fn param(name: &str) -> Option<String> {
    params()?.get(name)
}

/// The URL's parameters as the command line's render options and `--compare` lanes, with
/// `run=1` (a generation on load) in the second; or the first line of the parser's complaint
/// when they do not parse.
pub fn args() -> Result<(RenderArgs, ScreenshotArgs), String> {
    use clap::Parser;
    #[derive(Parser)]
    #[command(no_binary_name = true)]
    struct Url {
        #[command(flatten)]
        render: RenderArgs,
        /// Start in Compare mode with these configurations (as the command line's).
        #[arg(long, value_delimiter = ',', value_parser = super::parse_lane)]
        compare: Vec<super::compare::CompareLane>,
    }
    let mut argv = Vec::new();
    let mut run = false;
    if let Some(params) = params() {
        for entry in params.entries() {
            let Ok(pair) = entry else { continue };
            let pair = js_sys::Array::from(&pair);
            let (k, v) = (
                pair.get(0).as_string().unwrap_or_default(),
                pair.get(1).as_string().unwrap_or_default(),
            );
            match k.as_str() {
                "run" => run = v == "1",
                "hub" => {}
                _ => argv.extend([format!("--{k}"), v]),
            }
        }
    }
    log::info!("options from the page's URL: {argv:?}");
    let url = Url::try_parse_from(argv).map_err(|e| {
        let first = e.to_string().lines().next().unwrap_or_default().to_owned();
        first.trim_start_matches("error: ").to_owned()
    })?;
    if !(url.compare.is_empty() || (2..=4).contains(&url.compare.len())) {
        return Err("compare takes 2 to 4 configurations".into());
    }
    let shot = ScreenshotArgs {
        compare: url.compare,
        run,
        ..Default::default()
    };
    Ok((url.render, shot))
}

/// Sets the title to "tessera" followed by `suffix`.
pub fn set_title_suffix(suffix: &str) {
    if let Some(doc) = document() {
        doc.set_title(&format!("tessera{suffix}"));
    }
}

/// Shows `png` in `<img id="result">` as a `data:` URL (the page's DOM holds the image itself,
/// for whoever drives the page).
fn show_result(png: &[u8]) -> Result<(), String> {
    use base64::Engine;
    let img: web_sys::HtmlImageElement = element("result")?
        .dyn_into()
        .map_err(|_| "#result is not an <img>")?;
    let b64 = base64::engine::general_purpose::STANDARD.encode(png);
    img.set_src(&format!("data:image/png;base64,{b64}"));
    Ok(())
}

fn set_text(id: &str, text: &str) {
    if let Ok(e) = element(id) {
        e.set_text_content(Some(text));
    }
}

/// Offers `bytes` as a download named `name`.
pub fn download(name: &str, bytes: &[u8]) -> Result<(), String> {
    let js = |e: JsValue| format!("download of {name}: {e:?}");
    let parts = js_sys::Array::of1(&js_sys::Uint8Array::from(bytes));
    let blob = web_sys::Blob::new_with_u8_array_sequence(&parts).map_err(js)?;
    let url = web_sys::Url::create_object_url_with_blob(&blob).map_err(js)?;
    let a: web_sys::HtmlAnchorElement = document()
        .ok_or("no document")?
        .create_element("a")
        .map_err(js)?
        .dyn_into()
        .map_err(|_| "not an anchor")?;
    a.set_href(&url);
    a.set_download(name);
    a.click();
    web_sys::Url::revoke_object_url(&url).map_err(js)?;
    Ok(())
}

/// Reloads the page (a new WebGPU device).
pub fn reload() -> Result<(), String> {
    window()
        .ok_or("no window")?
        .location()
        .reload()
        .map_err(|e| format!("{e:?}"))
}

/// What was dropped on the page: a folder's name ("" for loose files) and its files (paths
/// relative to it).
type DroppedFiles = (String, Vec<(String, Vec<u8>)>);

/// Drops the page's script (`index.html`) has read (it walks dropped folders, which egui's
/// own drop handling cannot), waiting for the app; and the ones complete.
static DROPPED: Mutex<Vec<DroppedFiles>> = Mutex::new(Vec::new());
static DROPPED_DONE: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Called by the page's script for each file dropped: `folder` is the dropped folder's name
/// ("" for loose files), `path` the file's path inside it.
#[wasm_bindgen]
pub fn tessera_dropped_file(folder: String, path: String, bytes: Vec<u8>) {
    if let Ok(mut d) = DROPPED.lock() {
        match d.iter_mut().find(|(f, _)| *f == folder) {
            Some((_, files)) => files.push((path, bytes)),
            None => d.push((folder, vec![(path, bytes)])),
        }
    }
}

/// Called by the page's script once every file of the drop `folder` was handed over: the app
/// takes it on its next frame, which this asks for.
#[wasm_bindgen]
pub fn tessera_dropped_done(folder: String) {
    if let Ok(mut d) = DROPPED_DONE.lock() {
        d.push(folder);
    }
    UI.with(|ui| {
        if let Some(ctx) = ui.borrow().as_ref() {
            ctx.request_repaint();
        }
    });
}

thread_local! {
    /// The app's egui context, for what reaches the app from the page's script.
    static UI: std::cell::RefCell<Option<egui::Context>> = const { std::cell::RefCell::new(None) };
}

/// Lets the page's script wake the app ([`tessera_dropped_done`]).
pub fn attach(ctx: &egui::Context) {
    UI.with(|ui| *ui.borrow_mut() = Some(ctx.clone()));
}

/// A complete drop, as the app takes it.
pub enum Dropped {
    /// One image file: for the inpaint panel.
    Image(String, Vec<u8>),
    /// A model folder (or loose model files), mounted in memory: what the model field names.
    Model(String),
}

/// The next complete drop, if any.
pub fn take_dropped() -> Option<Dropped> {
    let folder = DROPPED_DONE.lock().ok()?.pop()?;
    let mut d = DROPPED.lock().ok()?;
    let i = d.iter().position(|(f, _)| *f == folder)?;
    let (folder, mut files) = d.swap_remove(i);
    if folder.is_empty() && files.len() == 1 && image::guess_format(&files[0].1).is_ok() {
        let (name, bytes) = files.swap_remove(0);
        return Some(Dropped::Image(name, bytes));
    }
    let name = if folder.is_empty() { "files" } else { &folder };
    Some(Dropped::Model(crate::hub::web::mount_dropped(name, files)))
}

/// Reports the open model and the first lane of the latest start to the page (see the
/// module's text).
#[derive(Default)]
pub struct Report {
    /// The model shown in `<pre id="model">`.
    model_shown: Option<String>,
    steps_shown: usize,
    /// The lane's image was reported.
    done: bool,
    /// The failure last reported.
    error: Option<String>,
}

impl Report {
    /// A new start: the title says it runs.
    pub fn started(&mut self) {
        *self = Self {
            model_shown: self.model_shown.take(),
            ..Self::default()
        };
        set_title_suffix(" — running");
    }

    /// Called each frame: the open model, a failure, the steps, the result.
    pub fn update(&mut self, session: &Session, runs: &Runs) {
        let model = session
            .model
            .as_ref()
            .map(|_| crate::render::model_name(session.model_name()));
        if model != self.model_shown {
            set_text("model", model.as_deref().unwrap_or(""));
            self.model_shown = model;
        }
        let lane = runs.lanes.first();
        let failure = session
            .device_lost
            .clone()
            .or_else(|| session.load_error.clone())
            .or_else(|| lane.and_then(|l| l.error.clone()));
        if let Some(m) = failure
            && self.error.as_ref() != Some(&m)
        {
            set_title_suffix(&format!(" — error: {m}"));
            self.error = Some(m);
        }
        let Some(lane) = lane else {
            return;
        };
        if lane.frames.len() != self.steps_shown {
            self.steps_shown = lane.frames.len();
            let fixed: Vec<String> = lane
                .frames
                .iter()
                .map(|f| f.newly_fixed.iter().filter(|x| **x).count().to_string())
                .collect();
            set_text("steps", &fixed.join(" "));
        }
        // Done once every lane is (Compare runs several).
        if !self.done && !runs.running() && lane.result.is_some() {
            self.done = true;
            let shown = super::save::png_bytes(session, lane)
                .map_err(|e| format!("{e:#}"))
                .and_then(|png| show_result(&png));
            match shown {
                Ok(()) => set_title_suffix(" — done"),
                Err(e) => set_title_suffix(&format!(" — error: {e}")),
            }
        }
    }
}
