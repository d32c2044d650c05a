//! Drawing the token grid (masked, fixed, newly fixed; step and confidence overlays) and
//! painting inpainting masks.

use egui::{Color32, Pos2, Rect, Stroke, StrokeKind, Vec2};

/// What to draw over the grid.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Overlay {
    None,
    /// Colour each token by the step it was fixed at.
    FixedStep,
    /// Heatmap of the model's confidence in each token's prediction.
    Confidence,
}

/// A perceptual-ish ramp from dark blue through green to yellow, t ∈ [0, 1].
pub fn ramp(t: f32) -> Color32 {
    let t = t.clamp(0.0, 1.0);
    let r = (255.0 * (1.5 * t - 0.4).clamp(0.0, 1.0)) as u8;
    let g = (255.0 * (1.2 * t).clamp(0.0, 1.0).powf(0.8)) as u8;
    let b = (255.0 * (0.8 - t).clamp(0.0, 1.0)) as u8;
    Color32::from_rgb(r, g, b)
}

/// One step's grid state to draw.
pub struct GridView<'a> {
    pub grid: (usize, usize),
    pub tokens: &'a [u32],
    pub newly_fixed: &'a [bool],
    pub confidence: &'a [f32],
    /// Step at which each token was fixed (None: still masked at this step).
    pub fixed_at: &'a [Option<usize>],
    pub steps: usize,
    pub mask_id: u32,
}

/// Draws the preview texture in `rect`, then the grid on top: masked cells dark, cells fixed
/// this step outlined, optional overlay.
pub fn draw_grid(
    painter: &egui::Painter,
    rect: Rect,
    preview: Option<egui::TextureId>,
    v: &GridView<'_>,
    overlay: Overlay,
) {
    if let Some(tex) = preview {
        painter.image(
            tex,
            rect,
            Rect::from_min_max(Pos2::ZERO, Pos2::new(1.0, 1.0)),
            Color32::WHITE,
        );
    } else {
        painter.rect_filled(rect, 0.0, Color32::from_gray(30));
    }
    let (gh, gw) = v.grid;
    if gh == 0 || gw == 0 || v.tokens.len() < gh * gw {
        return;
    }
    let cell = Vec2::new(rect.width() / gw as f32, rect.height() / gh as f32);
    let thin = cell.x.min(cell.y) < 6.0;
    for y in 0..gh {
        for x in 0..gw {
            let i = y * gw + x;
            let r = Rect::from_min_size(
                rect.min + Vec2::new(x as f32 * cell.x, y as f32 * cell.y),
                cell,
            );
            if v.tokens[i] == v.mask_id {
                painter.rect_filled(r, 0.0, Color32::from_gray(38));
                if !thin {
                    painter.rect_stroke(
                        r.shrink(0.5),
                        0.0,
                        Stroke::new(1.0, Color32::from_gray(60)),
                        StrokeKind::Inside,
                    );
                }
                continue;
            }
            match overlay {
                Overlay::None => {}
                Overlay::FixedStep => {
                    if let Some(s) = v.fixed_at[i] {
                        let t = s as f32 / (v.steps.max(2) - 1) as f32;
                        painter.rect_filled(r, 0.0, ramp(t).gamma_multiply(0.75));
                    }
                }
                Overlay::Confidence => {
                    painter.rect_filled(r, 0.0, ramp(v.confidence[i]).gamma_multiply(0.75));
                }
            }
            if v.newly_fixed[i] {
                painter.rect_stroke(
                    r,
                    0.0,
                    Stroke::new(
                        if thin { 1.0 } else { 2.0 },
                        Color32::from_rgb(255, 214, 10),
                    ),
                    StrokeKind::Inside,
                );
            }
        }
    }
}

/// The grid cell (row, column) under `pos` in a grid of `grid` cells drawn in `rect`.
pub fn cell_at(rect: Rect, (gh, gw): (usize, usize), pos: Pos2) -> Option<(usize, usize)> {
    if !rect.contains(pos) || gh == 0 || gw == 0 {
        return None;
    }
    let x = ((pos.x - rect.min.x) / rect.width() * gw as f32) as usize;
    let y = ((pos.y - rect.min.y) / rect.height() * gh as f32) as usize;
    Some((y.min(gh - 1), x.min(gw - 1)))
}

/// What the hover readout says about cell `(y, x)`: its token id (or that it is still
/// masked), the step it was fixed at, and the model's confidence in its prediction.
pub fn readout(v: &GridView<'_>, (y, x): (usize, usize)) -> String {
    let i = y * v.grid.1 + x;
    let Some(&token) = v.tokens.get(i) else {
        return String::new();
    };
    let what = if token == v.mask_id {
        "[MASK]".to_owned()
    } else {
        format!("token {token}")
    };
    let fixed = match v.fixed_at.get(i).copied().flatten() {
        Some(s) => format!("fixed at step {}", s + 1),
        None => "not fixed yet".to_owned(),
    };
    let confidence = v
        .confidence
        .get(i)
        .map_or(String::new(), |c| format!(", confidence {c:.3}"));
    format!("({y}, {x}): {what}, {fixed}{confidence}")
}

/// Paints a disc of `radius` image pixels at `pos` (image pixel coordinates) into `mask`
/// (1 = repaint), or erases it.
pub fn paint(mask: &mut [f32], (w, h): (usize, usize), pos: Pos2, radius: f32, erase: bool) {
    let (x0, x1) = (
        (pos.x - radius).floor().max(0.0) as usize,
        ((pos.x + radius).ceil() as usize).min(w),
    );
    let (y0, y1) = (
        (pos.y - radius).floor().max(0.0) as usize,
        ((pos.y + radius).ceil() as usize).min(h),
    );
    for y in y0..y1 {
        for x in x0..x1 {
            let d = Vec2::new(x as f32 + 0.5 - pos.x, y as f32 + 0.5 - pos.y).length();
            if d <= radius {
                mask[y * w + x] = if erase { 0.0 } else { 1.0 };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_readout_names_the_cell_under_the_pointer() {
        let rect = Rect::from_min_size(Pos2::new(10.0, 20.0), Vec2::new(40.0, 20.0));
        assert_eq!(cell_at(rect, (2, 4), Pos2::new(10.0, 20.0)), Some((0, 0)));
        assert_eq!(cell_at(rect, (2, 4), Pos2::new(49.9, 39.9)), Some((1, 3)));
        assert_eq!(cell_at(rect, (2, 4), Pos2::new(21.0, 31.0)), Some((1, 1)));
        assert_eq!(cell_at(rect, (2, 4), Pos2::new(5.0, 25.0)), None);
        let v = GridView {
            grid: (1, 2),
            tokens: &[7, 99],
            newly_fixed: &[true, false],
            confidence: &[0.25, 0.5],
            fixed_at: &[Some(2), None],
            steps: 4,
            mask_id: 99,
        };
        assert_eq!(
            readout(&v, (0, 0)),
            "(0, 0): token 7, fixed at step 3, confidence 0.250"
        );
        assert_eq!(
            readout(&v, (0, 1)),
            "(0, 1): [MASK], not fixed yet, confidence 0.500"
        );
    }
}
