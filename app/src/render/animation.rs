//! `--gif` / `--frames`: one frame per step, the token grid beside the decoded preview.

use anyhow::{Context, Result};
use tessera_engine::sampling::StepEvent;

use super::RenderArgs;

/// One animation frame: the token grid (masked cells dark, fixed cells showing the decoded
/// preview, cells fixed this step outlined) beside the decoded preview.
pub fn frame(
    preview: &[f32],
    (w, h): (usize, usize),
    grid: (usize, usize),
    ev: &StepEvent<'_>,
    mask_id: u32,
) -> image::RgbaImage {
    let (gh, gw) = grid;
    let mut img = image::RgbaImage::new((2 * w + 4) as u32, h as u32);
    let px = |x: usize, y: usize| -> [u8; 3] {
        std::array::from_fn(|c| {
            (preview[(c * h + y) * w + x].clamp(0.0, 1.0) * 255.0).round() as u8
        })
    };
    for y in 0..h {
        for x in 0..w {
            let (ty, tx) = (y * gh / h, x * gw / w);
            let t = ty * gw + tx;
            let (cy0, cx0) = (ty * h / gh, tx * w / gw);
            let (cy1, cx1) = ((ty + 1) * h / gh - 1, (tx + 1) * w / gw - 1);
            let edge = y == cy0 || y == cy1 || x == cx0 || x == cx1;
            let c = if ev.tokens[t] == mask_id {
                if edge { [70, 70, 78] } else { [40, 40, 46] }
            } else if ev.newly_fixed[t] && edge {
                [255, 214, 10]
            } else {
                px(x, y)
            };
            img.put_pixel(x as u32, y as u32, image::Rgba([c[0], c[1], c[2], 255]));
            let p = px(x, y);
            img.put_pixel(
                (w + 4 + x) as u32,
                y as u32,
                image::Rgba([p[0], p[1], p[2], 255]),
            );
        }
    }
    img
}

/// `--gif` / `--frames`: one frame per step, of the first image of the batch.
pub(super) struct Animation {
    on: bool,
    frames: Vec<image::RgbaImage>,
    error: Option<anyhow::Error>,
}

impl Animation {
    /// Creates the `--frames` folder up front, so a bad path fails before any generation.
    pub(super) fn new(a: &RenderArgs) -> Result<Self> {
        if let Some(d) = &a.frames {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
        }
        Ok(Self {
            on: a.gif.is_some() || a.frames.is_some(),
            frames: Vec::new(),
            error: None,
        })
    }

    /// Adds step `ev`'s frame: the token grid beside the preview `decode` makes from the
    /// predicted tokens, scaled up to at least 256 px high. After a failed decode it records
    /// nothing more; [`Self::finish`] reports the failure.
    pub(super) fn record(
        &mut self,
        ev: &StepEvent<'_>,
        mask_id: u32,
        decode: impl FnOnce(&[u32]) -> Result<(Vec<f32>, (usize, usize))>,
    ) {
        if !self.on || self.error.is_some() {
            return;
        }
        let l = ev.grid.0 * ev.grid.1;
        let first = &ev.predicted[..l];
        let (img, size) = match decode(first) {
            Ok(v) => v,
            Err(e) => {
                self.error = Some(e);
                return;
            }
        };
        let one = StepEvent {
            step: ev.step,
            steps: ev.steps,
            stage: ev.stage,
            grid: ev.grid,
            tokens: &ev.tokens[..l],
            predicted: first,
            newly_fixed: &ev.newly_fixed[..l],
            confidence: &ev.confidence[..l],
            ms: ev.ms,
            work: ev.work,
        };
        let f = frame(&img, size, ev.grid, &one, mask_id);
        let k = 256u32.div_ceil(f.height()).max(1);
        self.frames.push(image::imageops::resize(
            &f,
            f.width() * k,
            f.height() * k,
            image::imageops::FilterType::Nearest,
        ));
    }

    /// The frames, or the error of the preview decode that failed.
    pub(super) fn finish(self) -> Result<Vec<image::RgbaImage>> {
        match self.error {
            Some(e) => Err(e.context("decoding a preview frame")),
            None => Ok(self.frames),
        }
    }
}
