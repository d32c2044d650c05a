//! `--render`'s outputs: checked before any work (no collisions, no overwritten inputs, a
//! frames folder holding only tessera's frames), then written last, each atomically.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use super::RenderArgs;
use crate::files::{Out, png_bytes, write_atomically, write_tensors};

/// Where a path points, for comparing paths that may not exist yet: the canonical parent folder
/// joined with the file name.
fn resolved(p: &Path) -> PathBuf {
    if let Ok(c) = p.canonicalize() {
        return c;
    }
    let parent = p
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    match (parent.canonicalize(), p.file_name()) {
        (Ok(dir), Some(name)) => dir.join(name),
        _ => p.to_path_buf(),
    }
}

/// Is `name` a frame file tessera writes into `--frames` (`step-<digits>.png`)?
fn is_frame_name(name: &str) -> bool {
    name.strip_prefix("step-")
        .and_then(|r| r.strip_suffix(".png"))
        .is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
}

/// Frame file name of step `i` (0-based) of `n`: zero-padded so names sort in step order.
fn frame_name(i: usize, n: usize) -> String {
    let width = n.to_string().len().max(2);
    format!("step-{:0width$}.png", i + 1)
}

/// Checks every output path before any work: no two outputs name the same file, no output
/// overwrites an input, and a `--frames` folder holds nothing but tessera's own frames (which
/// the render replaces as a complete set).
///
/// Runs after [`check_options`], which bounds the batch it enumerates.
pub(super) fn check_outputs(a: &RenderArgs, out: &Path) -> Result<()> {
    let mut outputs: Vec<(String, PathBuf)> = (0..a.batch)
        .map(|i| ("--render".to_owned(), output_path(out, i, a.batch)))
        .collect();
    if let Some(g) = &a.gif {
        outputs.push(("--gif".into(), g.clone()));
    }
    if let Some(t) = &a.tokens_out {
        outputs.push(("--tokens-out".into(), t.clone()));
    }
    let mut inputs: Vec<(&str, &Path)> = Vec::new();
    if let Some(i) = &a.image {
        inputs.push(("--image", i));
    }
    if let Some(p) = &a.from_png {
        inputs.push(("--from-png", p));
    }
    if let Some(m) = &a.mask {
        inputs.push(("--mask", m));
    }
    if let Some(m) = a.model.as_deref().map(Path::new).filter(|m| m.exists()) {
        inputs.push(("--model", m));
    }
    let resolved_outputs: Vec<(&str, PathBuf)> = outputs
        .iter()
        .map(|(flag, p)| (flag.as_str(), resolved(p)))
        .collect();
    for (i, (flag, p)) in resolved_outputs.iter().enumerate() {
        if p.is_dir() {
            bail!("{flag} {} is a folder; name a file", p.display());
        }
        if let Some((other, _)) = resolved_outputs[..i].iter().find(|(_, q)| q == p) {
            bail!(
                "{other} and {flag} both name {}: give each output its own file",
                p.display()
            );
        }
        for (input, path) in &inputs {
            let q = resolved(path);
            if &q == p {
                bail!(
                    "{flag} {} would overwrite the input {input} {}",
                    p.display(),
                    path.display()
                );
            }
        }
    }
    if let Some(d) = &a.frames {
        if d.exists() && !d.is_dir() {
            bail!("--frames {} is a file; name a folder", d.display());
        }
        let rd = resolved(d);
        // An output named like a frame inside the folder would be deleted with the old frames.
        if let Some((flag, p)) = resolved_outputs.iter().find(|(_, p)| {
            p.parent() == Some(&rd)
                && p.file_name()
                    .is_some_and(|n| is_frame_name(&n.to_string_lossy()))
        }) {
            bail!("{flag} {} lies among the --frames files", p.display());
        }
        if d.is_dir() {
            let others: Vec<String> = std::fs::read_dir(d)
                .with_context(|| format!("reading {}", d.display()))?
                .filter_map(|e| e.ok())
                // This run's own outputs may live there too.
                .filter(|e| {
                    !resolved_outputs
                        .iter()
                        .any(|(_, p)| *p == resolved(&e.path()))
                })
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| !is_frame_name(n))
                .collect();
            if !others.is_empty() {
                bail!(
                    "--frames {} holds other files ({}): tessera writes a complete set of \
                     step-N.png there; give it an empty or new folder",
                    d.display(),
                    others[..others.len().min(3)].join(", ")
                );
            }
        }
    }
    Ok(())
}

fn output_path(out: &Path, i: usize, batch: usize) -> PathBuf {
    if batch == 1 {
        return out.to_path_buf();
    }
    let stem = out
        .file_stem()
        .map_or_else(|| "image".into(), |s| s.to_string_lossy().into_owned());
    let ext = out
        .extension()
        .map_or_else(|| "png".into(), |s| s.to_string_lossy().into_owned());
    out.with_file_name(format!("{stem}-{}.{ext}", i + 1))
}

/// Writes everything a render produced: the PNGs (image k with `texts[k]`'s chunks), `--tokens-out`, and the
/// animation `frames` to `--gif` / `--frames` (recorded when either is given). Everything is encoded first and
/// the image files are written last, each atomically.
#[allow(clippy::too_many_arguments)]
pub(super) fn write_outputs(
    a: &RenderArgs,
    out: &Path,
    images: &[f32],
    (w, h): (usize, usize),
    texts: &[HashMap<String, String>],
    tokens: &[u32],
    (batch, grid): (usize, (usize, usize)),
    frames: &[image::RgbaImage],
) -> Result<()> {
    let per = 3 * w * h;
    let mut pngs = Vec::new();
    for i in 0..batch {
        pngs.push((
            output_path(out, i, batch),
            png_bytes(&images[i * per..(i + 1) * per], w, h, &texts[i])?,
        ));
    }
    if let Some(t) = &a.tokens_out {
        let ids = tokens.iter().map(|&v| i64::from(v)).collect();
        write_tensors(t, &[Out::I64("tokens", vec![batch, grid.0, grid.1], ids)])?;
    }
    if let Some(g) = &a.gif {
        write_atomically(g, &gif_bytes(frames)?)?;
    }
    if let Some(d) = &a.frames {
        let mut encoded = Vec::new();
        for f in frames {
            let mut bytes = Vec::new();
            f.write_to(
                &mut std::io::Cursor::new(&mut bytes),
                image::ImageFormat::Png,
            )?;
            encoded.push(bytes);
        }
        // A complete set: an earlier run's frames (checked to be the folder's only files)
        // go first, so a shorter run leaves none of them behind.
        for e in std::fs::read_dir(d).with_context(|| format!("reading {}", d.display()))? {
            let e = e?;
            if is_frame_name(&e.file_name().to_string_lossy()) {
                std::fs::remove_file(e.path())
                    .with_context(|| format!("removing {}", e.path().display()))?;
            }
        }
        for (i, bytes) in encoded.iter().enumerate() {
            write_atomically(&d.join(frame_name(i, encoded.len())), bytes)?;
        }
    }
    for (path, bytes) in &pngs {
        write_atomically(path, bytes)?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

pub fn gif_bytes(frames: &[image::RgbaImage]) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    {
        let mut enc = image::codecs::gif::GifEncoder::new_with_speed(&mut bytes, 10);
        enc.set_repeat(image::codecs::gif::Repeat::Infinite)?;
        let n = frames.len();
        for (i, f) in frames.iter().enumerate() {
            // Hold the last frame longer.
            let ms = if i + 1 == n { 1500 } else { 400 };
            let delay = image::Delay::from_numer_denom_ms(ms, 1);
            enc.encode_frame(image::Frame::from_parts(f.clone(), 0, 0, delay))?;
        }
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::{frame_name, is_frame_name};

    #[test]
    fn frame_names_sort_in_step_order_for_any_step_count() {
        for n in [1, 9, 12, 99, 100, 1000] {
            let names: Vec<String> = (0..n).map(|i| frame_name(i, n)).collect();
            let mut sorted = names.clone();
            sorted.sort();
            assert_eq!(names, sorted, "{n} steps");
            assert!(names.iter().all(|f| is_frame_name(f)));
        }
        assert!(!is_frame_name("step-.png") && !is_frame_name("notes.txt"));
        assert!(!is_frame_name("step-1a.png"));
    }
}
