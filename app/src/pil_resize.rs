//! Pillow's `Image.resize(size, Image.LANCZOS)` on 8-bit grayscale ("L") images, bit for bit,
//! so inpainting masks become the same token grid as in diffusers' pipelines (which resize the
//! mask with Pillow). Pillow resamples in two separable passes (horizontal, then vertical) with
//! 22-bit fixed-point weights and rounds to 8 bits between them; a float resize differs on
//! soft (anti-aliased) mask edges. Follows Pillow's `libImaging/Resample.c` (precompute_coeffs,
//! normalize_coeffs_8bpc, ImagingResampleHorizontal/Vertical_8bpc).

/// Fixed-point precision of Pillow's 8-bit resampling weights.
const PRECISION_BITS: u32 = 32 - 8 - 2;
/// Lanczos's support (a = 3).
const SUPPORT: f64 = 3.0;

fn sinc(x: f64) -> f64 {
    if x == 0.0 {
        1.0
    } else {
        let x = x * std::f64::consts::PI;
        x.sin() / x
    }
}

fn lanczos(x: f64) -> f64 {
    if (-SUPPORT..SUPPORT).contains(&x) {
        sinc(x) * sinc(x / SUPPORT)
    } else {
        0.0
    }
}

/// Per output pixel: the first input pixel, how many it reads, and their fixed-point weights.
struct Coeffs {
    ksize: usize,
    bounds: Vec<(usize, usize)>,
    weights: Vec<i32>,
}

fn coeffs(in_size: usize, out_size: usize) -> Coeffs {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = SUPPORT * filterscale;
    let ksize = support.ceil() as usize * 2 + 1;
    let mut bounds = Vec::with_capacity(out_size);
    let mut weights = vec![0i32; out_size * ksize];
    for xx in 0..out_size {
        let center = (xx as f64 + 0.5) * scale;
        let ss = 1.0 / filterscale;
        // C's (int) truncates toward zero; the clamps below make the sign irrelevant.
        let xmin = ((center - support + 0.5) as i64).max(0) as usize;
        let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
        let n = xmax.saturating_sub(xmin);
        let k: Vec<f64> = (0..n)
            .map(|x| lanczos((x as f64 + xmin as f64 - center + 0.5) * ss))
            .collect();
        let total: f64 = k.iter().sum();
        for (x, w) in k.iter().enumerate() {
            let w = if total != 0.0 { w / total } else { *w };
            let fixed = w * f64::from(1u32 << PRECISION_BITS);
            weights[xx * ksize + x] = if w < 0.0 {
                (fixed - 0.5) as i32
            } else {
                (fixed + 0.5) as i32
            };
        }
        bounds.push((xmin, n));
    }
    Coeffs {
        ksize,
        bounds,
        weights,
    }
}

fn clip8(v: i64) -> u8 {
    (v >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Resizes an 8-bit grayscale image (`src` row-major, `w` × `h`) to `ow` × `oh` exactly as
/// Pillow's LANCZOS does.
pub fn resize_lanczos_l8(src: &[u8], (w, h): (usize, usize), (ow, oh): (usize, usize)) -> Vec<u8> {
    if w == 0 || h == 0 || ow == 0 || oh == 0 || src.len() != w * h {
        return vec![0; ow * oh];
    }
    let cv = coeffs(h, oh);
    // Rows the vertical pass reads.
    let first = cv.bounds[0].0;
    let last = cv.bounds[oh - 1].0 + cv.bounds[oh - 1].1;
    let half = 1i64 << (PRECISION_BITS - 1);
    let (tmp, tw, row0) = if ow != w {
        let ch = coeffs(w, ow);
        let mut tmp = vec![0u8; ow * (last - first)];
        for (yy, y) in (first..last).enumerate() {
            let row = &src[y * w..(y + 1) * w];
            for xx in 0..ow {
                let (xmin, n) = ch.bounds[xx];
                let k = &ch.weights[xx * ch.ksize..][..n];
                let ss = half
                    + row[xmin..xmin + n]
                        .iter()
                        .zip(k)
                        .map(|(&p, &kw)| i64::from(p) * i64::from(kw))
                        .sum::<i64>();
                tmp[yy * ow + xx] = clip8(ss);
            }
        }
        (tmp, ow, first)
    } else {
        (src.to_vec(), w, 0)
    };
    if oh == h {
        // Pillow skips the vertical pass; the horizontal one covered every row.
        return tmp;
    }
    let mut out = vec![0u8; ow * oh];
    for yy in 0..oh {
        let (ymin, n) = cv.bounds[yy];
        let k = &cv.weights[yy * cv.ksize..][..n];
        for xx in 0..ow {
            let ss = half
                + (0..n)
                    .map(|y| i64::from(tmp[(ymin - row0 + y) * tw + xx]) * i64::from(k[y]))
                    .sum::<i64>();
            out[yy * ow + xx] = clip8(ss);
        }
    }
    out
}

/// Resizes an RGB image to `ow` × `oh` exactly as Pillow's LANCZOS does (each channel as
/// [`resize_lanczos_l8`]: Pillow runs the same 8-bit passes with the same weights per band).
pub fn resize_lanczos_rgb8(img: &image::RgbImage, (ow, oh): (usize, usize)) -> image::RgbImage {
    let size = (img.width() as usize, img.height() as usize);
    let channels: Vec<Vec<u8>> = (0..3)
        .map(|c| {
            let plane: Vec<u8> = img.pixels().map(|p| p[c]).collect();
            resize_lanczos_l8(&plane, size, (ow, oh))
        })
        .collect();
    let mut out = image::RgbImage::new(ow as u32, oh as u32);
    for (i, px) in out.pixels_mut().enumerate() {
        *px = image::Rgb([channels[0][i], channels[1][i], channels[2][i]]);
    }
    out
}

/// Pillow's `convert("L")` of RGB pixels: (R·19595 + G·38470 + B·7471 + 2¹⁵) >> 16.
pub fn luma_l8(rgb: &image::RgbImage) -> Vec<u8> {
    rgb.pixels()
        .map(|p| {
            let [r, g, b] = p.0.map(u32::from);
            ((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16) as u8
        })
        .collect()
}

/// A mask's token grid as diffusers' inpainting pipelines make it: the "L" image `l8`
/// (`size` = (width, height)) resized to `grid` with [`resize_lanczos_l8`], then `v / 255 ≥ 0.5`
/// (true = repaint).
pub fn mask_grid(l8: &[u8], size: (usize, usize), grid: (usize, usize)) -> Vec<bool> {
    resize_lanczos_l8(l8, size, grid)
        .into_iter()
        .map(|v| f32::from(v) / 255.0 >= 0.5)
        .collect()
}
