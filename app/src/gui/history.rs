//! What the app remembers: the images made since it started (a strip of thumbnails), and the
//! prompts and models used recently, kept across restarts (eframe's persistence).

use serde::{Deserialize, Serialize};

/// The storage key of [`Recent`].
pub const RECENT_KEY: &str = "tessera.recent";

/// Most entries of each recent list, and most images in the strip.
const KEEP: usize = 20;
const STRIP: usize = 24;

/// Prompts and models used recently, newest first.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Recent {
    pub prompts: Vec<String>,
    pub models: Vec<String>,
}

impl Recent {
    /// Moves `value` to the front of `list` (adding it when new), keeping the newest entries.
    pub fn remember(list: &mut Vec<String>, value: &str) {
        let value = value.trim();
        if value.is_empty() {
            return;
        }
        list.retain(|v| v != value);
        list.insert(0, value.to_owned());
        list.truncate(KEEP);
    }
}

/// One image made this session: its texture and what made it.
pub struct Made {
    pub texture: egui::TextureId,
    pub label: String,
}

/// The images made since the app started, newest first.
#[derive(Default)]
pub struct Strip {
    pub images: Vec<Made>,
}

impl Strip {
    /// Adds an image; the oldest beyond the strip's length are returned for freeing.
    pub fn push(&mut self, made: Made) -> Vec<egui::TextureId> {
        self.images.insert(0, made);
        self.images
            .drain(STRIP.min(self.images.len())..)
            .map(|m| m.texture)
            .collect()
    }

    pub fn ui(&self, ui: &mut egui::Ui) {
        if self.images.is_empty() {
            return;
        }
        ui.label("Made this session");
        egui::ScrollArea::horizontal().show(ui, |ui| {
            ui.horizontal(|ui| {
                for m in &self.images {
                    ui.add(egui::Image::new((m.texture, egui::Vec2::splat(72.0))))
                        .on_hover_text(&m.label);
                }
            });
        });
    }
}

/// A "recent" menu beside a text field: choosing an entry puts it in `value`.
pub fn recent_menu(ui: &mut egui::Ui, id: &str, list: &[String], value: &mut String) {
    ui.add_enabled_ui(!list.is_empty(), |ui| {
        ui.menu_button(format!("recent {id}"), |ui| {
            for v in list {
                let short: String = v.chars().take(60).collect();
                if ui.button(short).clicked() {
                    value.clone_from(v);
                    ui.close();
                }
            }
        });
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recent_lists_move_repeats_to_the_front_and_keep_the_newest() {
        let mut r = Recent::default();
        for p in ["a", "b", "a", "  ", "c"] {
            Recent::remember(&mut r.prompts, p);
        }
        assert_eq!(r.prompts, ["c", "a", "b"]);
        for i in 0..30 {
            Recent::remember(&mut r.models, &format!("m{i}"));
        }
        assert_eq!(r.models.len(), KEEP);
        assert_eq!(r.models[0], "m29");
        let text = serde_json::to_string(&r).expect("serialize");
        assert_eq!(serde_json::from_str::<Recent>(&text).expect("read"), r);
    }

    #[test]
    fn the_strip_keeps_the_newest_images_and_hands_back_the_rest() {
        let mut s = Strip::default();
        let mut freed = Vec::new();
        for i in 0..(STRIP as u64 + 3) {
            freed.extend(s.push(Made {
                texture: egui::TextureId::User(i),
                label: format!("{i}"),
            }));
        }
        assert_eq!(s.images.len(), STRIP);
        assert_eq!(s.images[0].label, format!("{}", STRIP + 2));
        assert_eq!(
            freed,
            [0, 1, 2].map(egui::TextureId::User).to_vec(),
            "the oldest three"
        );
    }
}
