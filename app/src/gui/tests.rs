//! The panels in process (egui_kittest: no window, no X server): what each shows for the open
//! model, and what its controls do. The Xvfb test (`tests/app.rs`) covers the real window.

use egui_kittest::Harness;
use egui_kittest::kittest::{NodeT, Queryable};
use tessera_engine::GpuContext;
use tessera_engine::pipeline::Model;

use super::compare::ComparePanel;
use super::runs::Runs;
use super::session::Session;
use super::settings::SettingsPanel;
use crate::render::RenderArgs;

fn open(rel: &str) -> Model {
    let ctx = GpuContext::new().expect("adapter (apt-get install mesa-vulkan-drivers)");
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(rel);
    Model::open(&ctx, &path).expect("model")
}

#[test]
fn settings_show_a_prompt_for_text_models_and_a_class_picker_for_class_models() {
    let text = open("../tests/fixtures/amused/tiny-b/model");
    let mut panel = SettingsPanel::new(&RenderArgs::default(), Some(&text));
    let mut h = Harness::new_ui(|ui| panel.ui(ui, Some(&text), &[]));
    h.run();
    assert!(h.query_by_label("Negative prompt").is_some());
    assert!(h.query_all_by_label_contains("guidance").next().is_some());
    assert!(h.query_by_label("Class").is_none());
    drop(h);

    let class = open("../tests/fixtures/maskgit/mg-l4/model");
    let mut panel = SettingsPanel::new(&RenderArgs::default(), Some(&class));
    panel.reset_for(&class);
    let mut h = Harness::new_ui(|ui| panel.ui(ui, Some(&class), &[]));
    h.run();
    assert!(h.query_by_label("Class").is_some());
    assert!(
        h.query_by_label_contains("class-conditional MaskGIT, 10 classes")
            .is_some()
    );
    assert!(h.query_by_label("Negative prompt").is_none());
    assert!(
        h.query_by_label_contains("guidance").is_none(),
        "no unconditional branch"
    );
    drop(h);
    // MaskGIT's own defaults came with the model.
    assert_eq!(panel.settings.sampler.to_string(), "maskgit");
    assert_eq!(panel.settings.steps, 8);
}

#[test]
fn two_stage_models_show_the_super_resolution_toggle() {
    let two = open("../tests/fixtures/amused/tiny-sr/model");
    let mut panel = SettingsPanel::new(&RenderArgs::default(), Some(&two));
    assert_eq!(
        panel.settings.super_res_steps, 8,
        "the stage's default steps"
    );
    let mut h = Harness::new_ui(|ui| panel.ui(ui, Some(&two), &[]));
    h.run();
    h.get_by_label("super-resolution stage").click();
    h.run();
    assert!(
        h.query_all_by_label_contains("super-res steps")
            .next()
            .is_none(),
        "steps hidden with the stage off"
    );
    drop(h);
    let off = panel.settings.super_res_options(&two);
    assert!(off.skip, "the toggle turned the stage off");
    assert_eq!(two.grid_for(off), (4, 4));
    panel.settings.super_res = true;
    let on = panel.settings.super_res_options(&two);
    assert_eq!((on.skip, on.steps), (false, Some(8)));
    assert_eq!(two.grid_for(on), (8, 8));
    // A model of one stage has no toggle, and its options stay the default.
    let one = open("../tests/fixtures/amused/tiny-b/model");
    let mut panel = SettingsPanel::new(&RenderArgs::default(), Some(&one));
    let mut h = Harness::new_ui(|ui| panel.ui(ui, Some(&one), &[]));
    h.run();
    assert!(h.query_by_label("super-resolution stage").is_none());
    drop(h);
    assert_eq!(
        panel.settings.super_res_options(&one),
        tessera_engine::pipeline::SuperResOptions::default()
    );
}

/// An image loaded for editing is resized to what the open model takes with the settings, as
/// `--render --image` resizes it: a two-stage model's one output size (the stage's positions
/// fix it), the multiples of a one-stage model or of the base stage alone; the status line
/// says when.
#[test]
fn loaded_images_are_resized_to_what_the_model_takes() {
    use super::inpaint::InpaintPanel;
    let small = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/fixtures/amused/tiny-a/encode_input.png"
    );
    let ctx = egui::Context::default();
    let stages_1 = tessera_engine::pipeline::SuperResOptions {
        skip: true,
        steps: None,
    };
    for (model, stages, want, resized) in [
        (
            "../tests/fixtures/amused/tiny-sr/model",
            Default::default(),
            (32, 32),
            true,
        ),
        // The base stage alone takes multiples (of 8 px here): the image as it is.
        (
            "../tests/fixtures/amused/tiny-sr/model",
            stages_1,
            (16, 16),
            false,
        ),
        (
            "../tests/fixtures/amused/tiny-b/model",
            Default::default(),
            (16, 16),
            false,
        ),
    ] {
        let fit = crate::files::Fit::for_model(&open(model), stages);
        let mut session = Session::new(None, String::new());
        let mut panel = InpaintPanel::default();
        panel.load(&ctx, small, &mut session, Some(fit));
        assert_eq!(panel.edit_size(), Some(want), "{model}");
        let message = session.message.unwrap_or_default();
        assert_eq!(
            message.contains("resized 16×16 to 32×32"),
            resized,
            "{model}: {message:?}"
        );
    }
}

#[test]
fn cancel_is_disabled_while_nothing_runs() {
    let mut h = Harness::new_ui_state(
        |ui, (runs, session): &mut (Runs, Session)| runs.cancel_button(ui, session),
        (Runs::default(), Session::new(None, String::new())),
    );
    h.run();
    assert!(
        h.get_by_label("Cancel  (Esc)")
            .accesskit_node()
            .is_disabled()
    );
}

#[test]
fn a_lost_device_offers_a_restart_and_open_is_reported() {
    let mut session = Session::new(None, String::new());
    session.device_lost = Some("Destroyed".into());
    let mut h = Harness::new_ui_state(
        |ui, (s, opened): &mut (Session, bool)| *opened |= s.top_bar(ui, &[]),
        (session, false),
    );
    h.run();
    assert!(
        h.query_by_label_contains("The GPU device was lost (Destroyed)")
            .is_some()
    );
    assert!(h.query_by_label("Restart tessera").is_some());
    h.get_by_label("Open").click();
    h.run();
    assert!(h.state().1, "Open reports the click");
}

/// The Compare panel alone, with no device and no runs.
fn compare_harness() -> Harness<'static, (ComparePanel, Runs, Session)> {
    Harness::new_ui_state(
        |ui, (panel, runs, session): &mut (ComparePanel, Runs, Session)| {
            panel.ui(ui, session, runs);
        },
        (
            ComparePanel::default(),
            Runs::default(),
            Session::new(None, String::new()),
        ),
    )
}

#[test]
fn compare_keeps_two_to_four_configurations() {
    let mut h = compare_harness();
    h.run();
    for want in [3, 4, 4] {
        if let Some(plus) = h.query_by_label("+") {
            plus.click();
        }
        h.run();
        assert_eq!(h.state().0.configs.len(), want);
    }
    assert!(h.query_by_label("+").is_none(), "no more than four");
    for want in [3, 2] {
        h.get_by_label("−").click();
        h.run();
        assert_eq!(h.state().0.configs.len(), want);
    }
    assert!(h.query_by_label("−").is_none(), "no fewer than two");
}

#[test]
fn compare_lanes_parse_and_name_their_models() {
    let lane = super::parse_lane("amused:linear@some/model").expect("lane");
    assert_eq!(lane.model, "some/model");
    assert_eq!(lane.schedule.to_string(), "linear");
    assert_eq!(super::parse_lane("maskgit:cosine").expect("lane").model, "");
    assert!(super::parse_lane("cosine").is_err());
    let mut h = compare_harness();
    h.run();
    assert!(h.query_by_label("model of lane 2").is_some());
}

/// Lanes naming one model share its loaded weights.
#[test]
fn lanes_naming_one_model_share_it() {
    let mut session = Session::new(None, String::new());
    session.gpu = Some(std::sync::Arc::new(GpuContext::new().expect("adapter")));
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/amused/tiny-b/model")
        .display()
        .to_string();
    let a = session.lane_model(&path).expect("open");
    let b = session.lane_model(&format!(" {path} ")).expect("again");
    assert!(std::sync::Arc::ptr_eq(&a, &b));
    assert!(session.lane_model("/no/such/model").is_err());
}

/// The timeline's view controls: "smooth" switches the enlarged images to linear sampling,
/// "fit" undoes every lane's zoom and pan.
#[test]
fn smooth_toggle_and_fit_reset_the_lanes_view() {
    use super::runs::{Frame, Lane};
    use super::worker::Preview;
    let model = std::sync::Arc::new(open("../tests/fixtures/amused/tiny-b/model"));
    let settings = SettingsPanel::new(&RenderArgs::default(), Some(&model)).settings;
    let mut runs = Runs::default();
    let mut lane = Lane::new(settings, None, model.clone(), None);
    let cells = 16;
    lane.frames.push(Frame {
        step: 0,
        stage: 0,
        tokens: vec![model.mask_id(); cells],
        newly_fixed: vec![false; cells],
        confidence: vec![0.0; cells],
        predicted: vec![0; cells],
        preview: Preview {
            crisp: egui::TextureId::User(1),
            smooth: egui::TextureId::User(2),
        },
        grid: (4, 4),
        ms: 1.0,
        fixed_total: 0,
    });
    runs.lanes.push(lane);
    runs.views.borrow_mut().push(egui::Rect::from_min_size(
        egui::pos2(10.0, 10.0),
        egui::vec2(50.0, 50.0),
    ));
    let mut h = Harness::new_ui_state(
        |ui, runs: &mut Runs| {
            runs.timeline(ui);
            runs.lane_view(ui, 0, 128.0);
        },
        runs,
    );
    h.run();
    assert!(!h.state().smooth);
    h.get_by_label("smooth").click();
    h.run();
    assert!(h.state().smooth, "the toggle switches to smooth sampling");
    assert_eq!(
        h.state().lanes[0].frames[0].preview.id(h.state().smooth),
        egui::TextureId::User(2)
    );
    h.get_by_label("fit").click();
    h.run();
    // Fitted again: the view is the lane's whole content (128 × 2 + spacing wide), not the
    // zoomed-in square set above.
    let v = h.state().views.borrow()[0];
    assert!(v.width() > 200.0, "{v:?}");
}

/// Before its first step a lane says "starting…", and, while the engine times kernels on this
/// GPU (its first run there), how many call shapes it has timed since the lane started; a lane
/// that ended without steps says so.
#[test]
fn a_lane_waiting_for_its_first_step_says_when_kernels_are_being_timed() {
    use super::runs::Lane;
    let model = std::sync::Arc::new(open("../tests/fixtures/amused/tiny-b/model"));
    let settings = SettingsPanel::new(&RenderArgs::default(), Some(&model)).settings;
    let mut gpu = GpuContext::new().expect("adapter");
    gpu.set_tuner(tessera_engine::gpu::Tuner::in_memory());
    let gpu = std::sync::Arc::new(gpu);
    let mut lane = Lane::new(settings, None, model, None);
    lane.tuning = Some((gpu.clone(), gpu.tuner().stats().measured));
    let mut runs = Runs::default();
    runs.lanes.push(lane);
    let mut h = Harness::new_ui_state(|ui, runs: &mut Runs| runs.lane_view(ui, 0, 64.0), runs);
    h.run();
    assert!(h.query_by_label("starting…").is_some());
    // One call shape timed (two candidates: the engine's own `pick`, as an op's launcher calls it).
    let picked = gpu
        .tuner()
        .pick("lane test", 1u8, &[1, 2], |c| Ok(f64::from(c)));
    assert_eq!(picked, 1);
    h.run();
    assert!(
        h.query_by_label("starting… timing this GPU's kernels, once: 1 call shape")
            .is_some()
    );
    h.state_mut().lanes[0].running = false;
    h.run();
    assert!(h.query_by_label("no steps").is_some());
}
