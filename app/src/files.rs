//! Files in and out: safetensors tensors, PNG images, and writes that leave nothing behind on
//! failure.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, Result, bail};
use safetensors::{Dtype, SafeTensors, tensor::TensorView};
use tessera_engine::pipeline::{Model, SuperResOptions};

/// Writes `bytes` to `path` through a temporary sibling and a rename, so a failure never leaves
/// a partial file.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .with_context(|| format!("{}: not a file path", path.display()))?;
    let tmp = dir.join(format!(
        ".{}.tmp{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        anyhow::anyhow!("writing {}: {e}", path.display())
    })
}

/// A named tensor to write.
pub enum Out<'a> {
    F32(&'a str, Vec<usize>, &'a [f32]),
    I64(&'a str, Vec<usize>, Vec<i64>),
}

/// Serialises tensors into a safetensors file.
pub fn write_tensors(path: &Path, tensors: &[Out<'_>]) -> Result<()> {
    let mut owned: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    for t in tensors {
        match t {
            Out::F32(n, s, v) => owned.push((
                (*n).into(),
                Dtype::F32,
                s.clone(),
                bytemuck::cast_slice(v).to_vec(),
            )),
            Out::I64(n, s, v) => owned.push((
                (*n).into(),
                Dtype::I64,
                s.clone(),
                bytemuck::cast_slice(v).to_vec(),
            )),
        }
    }
    let views: Vec<(String, TensorView<'_>)> = owned
        .iter()
        .map(|(n, d, s, b)| Ok((n.clone(), TensorView::new(*d, s.clone(), b)?)))
        .collect::<Result<_, safetensors::SafeTensorError>>()?;
    let bytes = safetensors::serialize(views, None)?;
    write_atomically(path, &bytes)
}

/// Reads integer token ids (i64 or i32) named `name` from a safetensors file, as u32 with their
/// shape. Negative or oversized ids are an error.
pub fn read_tokens(path: &Path, name: &str) -> Result<(Vec<u32>, Vec<usize>)> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    parse_tokens(&bytes, name, path)
}

/// [`read_tokens`] on a file's bytes (`path` names it in errors).
pub fn parse_tokens(bytes: &[u8], name: &str, path: &Path) -> Result<(Vec<u32>, Vec<usize>)> {
    let st = SafeTensors::deserialize(bytes)
        .with_context(|| format!("{}: not a valid safetensors file", path.display()))?;
    let t = st
        .tensor(name)
        .with_context(|| format!("{}: no tensor {name:?}", path.display()))?;
    let vals: Vec<i64> = match t.dtype() {
        Dtype::I64 => bytemuck::pod_collect_to_vec::<u8, i64>(t.data()),
        Dtype::I32 => bytemuck::pod_collect_to_vec::<u8, i32>(t.data())
            .into_iter()
            .map(i64::from)
            .collect(),
        d => bail!(
            "{}: tensor {name:?} has dtype {d:?}, expected I64 or I32",
            path.display()
        ),
    };
    let ids = vals
        .iter()
        .map(|&v| {
            u32::try_from(v).with_context(|| format!("{}: {name} holds id {v}", path.display()))
        })
        .collect::<Result<Vec<u32>>>()?;
    let count = t
        .shape()
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d));
    if count != Some(ids.len()) {
        bail!(
            "{}: tensor {name:?} has shape {:?} but holds {} ids",
            path.display(),
            t.shape(),
            ids.len()
        );
    }
    Ok((ids, t.shape().to_vec()))
}

/// The image formats tessera decodes.
const READABLE: &str = "PNG, JPEG, WebP or GIF";

/// Opens an image identified by its content, not its file name (a PNG saved as `.jpg` reads as
/// the PNG it is). `what` names it in errors ("image", "mask").
pub fn open_image(path: &Path, what: &str) -> Result<image::DynamicImage> {
    let bytes =
        std::fs::read(path).with_context(|| format!("{}: cannot read {what}", path.display()))?;
    decode_image(&bytes, path, what)
}

/// [`open_image`] on a file's bytes (`path` names it in errors). Images over 16 384 px a side
/// or 256 MiB decoded are refused before decoding.
pub fn decode_image(bytes: &[u8], path: &Path, what: &str) -> Result<image::DynamicImage> {
    use image::ImageFormat;
    let format = match image::guess_format(bytes) {
        Ok(f @ (ImageFormat::Png | ImageFormat::Jpeg | ImageFormat::WebP | ImageFormat::Gif)) => f,
        Ok(other) => bail!(
            "{}: the {what} is a {} file; tessera reads {READABLE}",
            path.display(),
            other
                .extensions_str()
                .first()
                .map_or("unsupported", |e| e)
                .to_uppercase()
        ),
        Err(_) => bail!(
            "{}: the {what} is not an image tessera recognises ({} bytes); it reads {READABLE}",
            path.display(),
            bytes.len()
        ),
    };
    let mut reader = image::ImageReader::with_format(std::io::Cursor::new(bytes), format);
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(16_384);
    limits.max_image_height = Some(16_384);
    limits.max_alloc = Some(256 << 20);
    reader.limits(limits);
    reader.decode().with_context(|| {
        format!(
            "{}: cannot decode the {what} (its content is {format:?})",
            path.display()
        )
    })
}

/// Reads an image as RGB f32 NCHW `[1, 3, H, W]` with values in [0, 1] (alpha dropped).
pub fn read_image(path: &Path) -> Result<(Vec<f32>, usize, usize)> {
    image_to_chw(&open_image(path, "image")?.to_rgb8())
}

/// An image read for a model: RGB f32 NCHW values in [0, 1], its width and height as used,
/// and the (width, height) the file had.
pub struct FittedImage {
    pub pixels: Vec<f32>,
    pub width: usize,
    pub height: usize,
    pub file_size: (usize, usize),
}

/// The image sizes a model runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fit {
    /// Sides that are multiples of this many pixels ([`Model::pixel_multiple`]).
    Multiple(usize),
    /// This size (width, height) only: a model whose grid is fixed
    /// ([`Model::fixed_image_size`]: MaskGIT, a two-stage model's super-resolution stage).
    Exact(usize, usize),
}

impl Fit {
    /// What `model` takes in a run with `super_res`.
    pub fn for_model(model: &Model, super_res: SuperResOptions) -> Self {
        match model.fixed_image_size(super_res) {
            Some((w, h)) => Fit::Exact(w, h),
            None => Fit::Multiple(model.pixel_multiple()),
        }
    }

    /// The size an image of `(w, h)` is resized to; `None` for an image smaller than one
    /// multiple.
    fn size(self, (w, h): (usize, usize)) -> Option<(usize, usize)> {
        match self {
            Fit::Exact(fw, fh) => Some((fw, fh)),
            Fit::Multiple(m) => {
                let m = m.max(1);
                let (fw, fh) = (w - w % m, h - h % m);
                (fw > 0 && fh > 0).then_some((fw, fh))
            }
        }
    }

    /// Why an image is resized, for the log line.
    fn reason(self) -> String {
        match self {
            Fit::Exact(w, h) => format!("this model works on {w}×{h} px only"),
            Fit::Multiple(m) => format!("this model needs sides that are multiples of {m}"),
        }
    }
}

/// `img` resized to what `fit` takes (`name` names it in the log line and errors): an image
/// off a multiple is resized down to the nearest multiples, one of another size than a fixed
/// one to that size, as diffusers' image processor resizes (Pillow's 8-bit LANCZOS, bit for
/// bit), with a log line. An image smaller than one multiple is refused.
pub fn fit_image(img: image::RgbImage, fit: Fit, name: &str) -> Result<image::RgbImage> {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let Some((fw, fh)) = fit.size((w, h)) else {
        // (an exact fit always has a size)
        let m = match fit {
            Fit::Multiple(m) => m,
            Fit::Exact(..) => 1,
        };
        bail!(
            "{name}: image is {w}×{h}; this model needs at least {m}×{m} pixels (sides are multiples of {m})"
        );
    };
    if (fw, fh) == (w, h) {
        return Ok(img);
    }
    log::warn!("{name}: resizing {w}×{h} to {fw}×{fh} ({})", fit.reason());
    Ok(crate::pil_resize::resize_lanczos_rgb8(&img, (fw, fh)))
}

/// [`read_image`] for a model: resized to what `fit` takes ([`fit_image`]).
pub fn read_image_fitted(path: &Path, fit: Fit) -> Result<FittedImage> {
    let img = open_image(path, "image")?.to_rgb8();
    let file_size = (img.width() as usize, img.height() as usize);
    let img = fit_image(img, fit, &path.display().to_string())?;
    let (pixels, width, height) = image_to_chw(&img)?;
    Ok(FittedImage {
        pixels,
        width,
        height,
        file_size,
    })
}

/// RGB pixels as f32 NCHW `[1, 3, H, W]` values in [0, 1], with the width and height.
pub fn image_to_chw(img: &image::RgbImage) -> Result<(Vec<f32>, usize, usize)> {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let mut out = vec![0.0f32; 3 * h * w];
    for (x, y, px) in img.enumerate_pixels() {
        for c in 0..3 {
            out[(c * h + y as usize) * w + x as usize] = f32::from(px[c]) / 255.0;
        }
    }
    Ok((out, w, h))
}

/// Encodes NCHW values (clipped to [0, 1]) of one image as PNG bytes, with optional text chunks.
pub fn png_bytes(
    chw: &[f32],
    w: usize,
    h: usize,
    text: &HashMap<String, String>,
) -> Result<Vec<u8>> {
    let mut rgb = vec![0u8; 3 * w * h];
    for y in 0..h {
        for x in 0..w {
            for c in 0..3 {
                let v = chw[(c * h + y) * w + x].clamp(0.0, 1.0);
                rgb[(y * w + x) * 3 + c] = (v * 255.0).round() as u8;
            }
        }
    }
    let mut out = Vec::new();
    {
        let mut enc = png_encoder(&mut out, w, h)?;
        for (k, v) in text {
            // tEXt holds Latin-1 only; anything else (a prompt with an emoji) goes in iTXt
            // (UTF-8), as AUTOMATIC1111 writes it too.
            if v.chars().all(|c| u32::from(c) < 256) {
                enc.add_text_chunk(k.clone(), v.clone())?;
            } else {
                enc.add_itxt_chunk(k.clone(), v.clone())?;
            }
        }
        let mut writer = enc.write_header()?;
        writer.write_image_data(&rgb)?;
    }
    Ok(out)
}

fn png_encoder(out: &mut Vec<u8>, w: usize, h: usize) -> Result<png::Encoder<'_, &mut Vec<u8>>> {
    let mut enc = png::Encoder::new(out, u32::try_from(w)?, u32::try_from(h)?);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    Ok(enc)
}

/// The `parameters` text a PNG carries (tEXt or iTXt, as tessera and AUTOMATIC1111 write it).
pub fn png_parameters(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let reader = png::Decoder::new(std::io::Cursor::new(&bytes))
        .read_info()
        .with_context(|| format!("{}: not a PNG", path.display()))?;
    let info = reader.info();
    let latin1 = info
        .uncompressed_latin1_text
        .iter()
        .find(|t| t.keyword == "parameters")
        .map(|t| t.text.clone());
    let utf8 = || {
        info.utf8_text
            .iter()
            .find(|t| t.keyword == "parameters")
            .and_then(|t| t.get_text().ok())
    };
    latin1.or_else(utf8).with_context(|| {
        format!(
            "{}: no `parameters` text (not an image tessera or AUTOMATIC1111 wrote)",
            path.display()
        )
    })
}
