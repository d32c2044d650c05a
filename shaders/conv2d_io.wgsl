// The bindings of the convolution kernels (prepended to conv2d.wgsl and conv2d_coop.wgsl).

// struct Params: generated from the Rust declaration (ops::conv::Params, kernel_params!)
// and appended by shaders::Module::source.

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> weight: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;

// The implicit GEMMs' kernel size (conv2d_gemm, conv2d_coop), fixed per pipeline so that the
// patch gather's divisions by it are by constants (multiplies and shifts), not the general
// integer division every element would otherwise pay; equal to p.kh and p.kw.
override KH: u32 = 3u;
override KW: u32 = 3u;

// The implicit GEMMs' patch (conv2d_gemm, conv2d_coop): element k = (ci, ky, kx) of the patch
// under output pixel q of image bi, zero outside K, the output and the (padded) image.
fn patch_at(bi: u32, k: u32, q: u32) -> f32 {
    let taps = KH * KW;
    if (k < p.cin * taps && q < p.oh * p.ow) {
        let ci = k / taps;
        let ky = (k % taps) / KW;
        let kx = k % KW;
        let iy = i32((q / p.ow) * p.stride_h + ky) - i32(p.pad_top);
        let ix = i32((q % p.ow) * p.stride_w + kx) - i32(p.pad_left);
        if (iy >= 0 && ix >= 0 && u32(iy) < p.h && u32(ix) < p.w) {
            return x[((bi * p.cin + ci) * p.h + u32(iy)) * p.w + u32(ix)];
        }
    }
    return 0.0;
}
