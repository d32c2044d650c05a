//! The desktop app under a virtual X server: `tessera --screenshot` opens the window on the
//! software adapter, runs one generation and saves a screenshot of the whole window.
//! Needs `xvfb-run` (Debian/Ubuntu: `apt-get install -y xvfb`).

use std::path::Path;
use std::process::Command;

fn run_screenshot(out: &Path, extra: &[&str]) {
    run_screenshot_with(out, "amused/tiny-b/model", extra);
}

/// `xvfb-run -a` can pick the same display number for two servers started at once; the app
/// tests take turns.
static XVFB: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn run_screenshot_with(out: &Path, fixture: &str, extra: &[&str]) {
    let _turn = XVFB
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let model = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures")
        .join(fixture);
    let have_xvfb = Command::new("xvfb-run").arg("--help").output().is_ok();
    assert!(
        have_xvfb,
        "the app test needs xvfb-run: `apt-get install -y xvfb`"
    );
    let mut args = vec![
        "-a".to_owned(),
        "-s".into(),
        "-screen 0 1400x900x24".into(),
        env!("CARGO_BIN_EXE_tessera").into(),
        "--screenshot".into(),
        out.display().to_string(),
        "--model".into(),
        model.display().to_string(),
        "--prompt".into(),
        "blue heart".into(),
        "--seed".into(),
        "5".into(),
    ];
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    let o = Command::new("xvfb-run")
        .args(&args)
        .env("RUST_LOG", "error")
        .output()
        .expect("xvfb-run");
    assert!(
        o.status.success(),
        "tessera --screenshot failed:\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

fn distinct_colors(img: &image::RgbaImage, x0: u32, y0: u32, x1: u32, y1: u32) -> usize {
    let mut seen = std::collections::HashSet::new();
    for y in y0..y1.min(img.height()) {
        for x in x0..x1.min(img.width()) {
            seen.insert(img.get_pixel(x, y).0);
        }
    }
    seen.len()
}

#[test]
fn screenshot_shows_a_real_frame_with_the_generated_image() {
    let dir = std::env::temp_dir().join(format!("tessera-app-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp");
    let out = dir.join("shot.png");
    run_screenshot(&out, &[]);
    let img = image::open(&out).expect("screenshot is a PNG").to_rgba8();
    assert!(
        img.width() >= 1280 && img.height() >= 800,
        "window {}x{}",
        img.width(),
        img.height()
    );
    // Not blank: the whole frame has many colours (text, widgets, images).
    assert!(
        distinct_colors(&img, 0, 0, img.width(), img.height()) > 500,
        "blank frame"
    );
    // The generation area (right of the settings panel, below the toolbar) holds the decoded
    // image: far from uniform.
    let region = distinct_colors(&img, 300, 90, 1270, 500);
    assert!(
        region > 200,
        "generated image region has only {region} colours"
    );
}

#[test]
fn compare_mode_screenshot_runs_every_lane() {
    let dir = std::env::temp_dir().join(format!("tessera-app-cmp-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp");
    let out = dir.join("compare.png");
    run_screenshot(
        &out,
        &["--compare", "amused:cosine,maskgit:linear", "--steps", "6"],
    );
    let img = image::open(&out).expect("png").to_rgba8();
    assert!(
        distinct_colors(&img, 300, 120, 1270, 300) > 200,
        "compare lanes missing"
    );
}

/// One prompt across two models: the second lane names the embedded default model, the first
/// runs the open fixture model; both render.
#[test]
fn compare_lanes_run_on_their_own_models() {
    let dir = std::env::temp_dir().join(format!("tessera-app-cmp2-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp");
    let out = dir.join("compare-models.png");
    let default_model = Path::new(env!("CARGO_MANIFEST_DIR")).join("../assets/models/emoji");
    let lanes = format!("amused:cosine,amused:cosine@{}", default_model.display());
    run_screenshot(&out, &["--compare", &lanes, "--steps", "4"]);
    let img = image::open(&out).expect("png").to_rgba8();
    assert!(
        distinct_colors(&img, 300, 120, 1270, 320) > 200,
        "compare lanes missing"
    );
}

/// A two-stage model: the base's grid fills in, then the super-resolution stage's; the window
/// ends on the larger image.
#[test]
fn two_stage_models_run_both_stages_in_the_window() {
    let dir = std::env::temp_dir().join(format!("tessera-app-sr-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp");
    let out = dir.join("two-stage.png");
    run_screenshot_with(&out, "amused/tiny-sr/model", &["--sr-steps", "4"]);
    let img = image::open(&out).expect("png").to_rgba8();
    assert!(
        distinct_colors(&img, 300, 90, 1270, 500) > 200,
        "generated image region is flat"
    );
}

#[test]
fn maskgit_checkpoints_open_with_a_class_picker() {
    let dir = std::env::temp_dir().join(format!("tessera-app-mg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp");
    let out = dir.join("maskgit.png");
    run_screenshot_with(&out, "maskgit/mg-l4/model", &["--class", "7"]);
    let img = image::open(&out).expect("png").to_rgba8();
    assert!(
        distinct_colors(&img, 300, 90, 1270, 500) > 200,
        "no generated image"
    );
}
