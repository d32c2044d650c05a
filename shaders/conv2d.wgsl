// 2-D convolution family on NCHW f32 tensors.
//
// conv2d:            out[b, co, oy, ox] = bias[co] + Σ_{ci ∈ group(co), ky, kx}
//                        x[b, ci, oy·sh + ky − pad_top, ox·sw + kx − pad_left] · w[co, ci, ky, kx]
//                    weight [cout, cin/groups, kh, kw] (PyTorch layout); zero padding, which may
//                    be asymmetric (the op derives oh/ow from all four sides).
// conv_transpose2d:  out[b, co, oy, ox] = bias[co] + Σ x[b, ci, iy, ix] · w[ci, co, ky, kx] over
//                    oy = iy·sh − pad_top + ky (likewise x); weight [cin, cout, kh, kw], groups 1.
// depthwise_nhwc:    channels-last depthwise conv (groups = cout = C, cin = C·n with n inputs per
//                    group, PyTorch's grouping): x [B, H, W, cin], weight [C, n, kh, kw],
//                    out[b, oy, ox, c] = bias[c] + Σ_j Σ x[b, oy·sh + ky − pad_top,
//                    ox·sw + kx − pad_left, c·n + j] · w[c, j, ky, kx]; outside the image the
//                    padding mode (p.pad_mode) reads zeros, the edge, or the mirror image. One
//                    invocation per output element, channels fastest (neighbouring invocations
//                    read neighbouring addresses).
// upsample_nearest:  out[b, c, y, x] = x[b, c, y / stride_h, x / stride_w] (integer factor).
// pad2d:             out[b, c, y, x] = x[b, c, y − pad_top, x − pad_left] inside, else 0.
//
// Thread mapping: one invocation per output element, except the register-blocked kernels
// (conv2d_rows, conv_transpose2d_rows) and the implicit GEMM (conv2d_gemm) below.

// Bindings: conv2d_io.wgsl (prepended); Params: ops::conv::Params (appended).

const WG: u32 = 256u;

fn out_index(wid: vec3<u32>, nwg: vec3<u32>, li: u32) -> u32 {
    return (wid.x + wid.y * nwg.x) * WG + li;
}

@compute @workgroup_size(256, 1, 1)
fn conv2d(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let i = out_index(wid, nwg, li);
    if (i >= p.batch * p.cout * p.oh * p.ow) {
        return;
    }
    let ox = i % p.ow;
    let oy = (i / p.ow) % p.oh;
    let co = (i / (p.ow * p.oh)) % p.cout;
    let b = i / (p.ow * p.oh * p.cout);
    let cin_g = p.cin / p.groups;
    let cout_g = p.cout / p.groups;
    let ci0 = (co / cout_g) * cin_g;
    var acc = 0.0;
    if (p.has_bias != 0u) {
        acc = bias[co];
    }
    for (var ci = 0u; ci < cin_g; ci++) {
        let x_base = (b * p.cin + ci0 + ci) * p.h * p.w;
        let w_base = (co * cin_g + ci) * p.kh * p.kw;
        for (var ky = 0u; ky < p.kh; ky++) {
            let iy = i32(oy * p.stride_h + ky) - i32(p.pad_top);
            if (iy < 0 || iy >= i32(p.h)) {
                continue;
            }
            for (var kx = 0u; kx < p.kw; kx++) {
                let ix = i32(ox * p.stride_w + kx) - i32(p.pad_left);
                if (ix < 0 || ix >= i32(p.w)) {
                    continue;
                }
                acc += x[x_base + u32(iy) * p.w + u32(ix)] * weight[w_base + ky * p.kw + kx];
            }
        }
    }
    out[i] = acc;
}

@compute @workgroup_size(256, 1, 1)
fn conv_transpose2d(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let i = out_index(wid, nwg, li);
    if (i >= p.batch * p.cout * p.oh * p.ow) {
        return;
    }
    let ox = i % p.ow;
    let oy = (i / p.ow) % p.oh;
    let co = (i / (p.ow * p.oh)) % p.cout;
    let b = i / (p.ow * p.oh * p.cout);
    var acc = 0.0;
    if (p.has_bias != 0u) {
        acc = bias[co];
    }
    for (var ky = 0u; ky < p.kh; ky++) {
        let ny = i32(oy + p.pad_top) - i32(ky);
        if (ny < 0 || ny % i32(p.stride_h) != 0) {
            continue;
        }
        let iy = u32(ny) / p.stride_h;
        if (iy >= p.h) {
            continue;
        }
        for (var kx = 0u; kx < p.kw; kx++) {
            let nx = i32(ox + p.pad_left) - i32(kx);
            if (nx < 0 || nx % i32(p.stride_w) != 0) {
                continue;
            }
            let ix = u32(nx) / p.stride_w;
            if (ix >= p.w) {
                continue;
            }
            for (var ci = 0u; ci < p.cin; ci++) {
                let xv = x[((b * p.cin + ci) * p.h + iy) * p.w + ix];
                acc += xv * weight[((ci * p.cout + co) * p.kh + ky) * p.kw + kx];
            }
        }
    }
    out[i] = acc;
}

@compute @workgroup_size(256, 1, 1)
fn upsample_nearest(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let i = out_index(wid, nwg, li);
    if (i >= p.batch * p.cout * p.oh * p.ow) {
        return;
    }
    let ox = i % p.ow;
    let oy = (i / p.ow) % p.oh;
    let bc = i / (p.ow * p.oh);
    out[i] = x[(bc * p.h + oy / p.stride_h) * p.w + ox / p.stride_w];
}

@compute @workgroup_size(256, 1, 1)
fn pad2d(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let i = out_index(wid, nwg, li);
    if (i >= p.batch * p.cout * p.oh * p.ow) {
        return;
    }
    let ox = i % p.ow;
    let oy = (i / p.ow) % p.oh;
    let bc = i / (p.ow * p.oh);
    let iy = i32(oy) - i32(p.pad_top);
    let ix = i32(ox) - i32(p.pad_left);
    var v = 0.0;
    if (iy >= 0 && iy < i32(p.h) && ix >= 0 && ix < i32(p.w)) {
        v = x[(bc * p.h + u32(iy)) * p.w + u32(ix)];
    }
    out[i] = v;
}

// conv2d_rows: conv2d (groups = 1) for adapters that run on the CPU; same bindings and result.
// Register-blocked like matmul_rows.wgsl: invocation (x, y) of workgroup (wx, wy, b) computes 8
// output channels co = 32·wy + 8·y + 0..7 at 8 output pixels (flattened over oh·ow)
// 64·wx + x + 8·j (j = 0..7), in 16 named vec4 accumulators (acc<channel><a|b>: pixels j 0..3 and
// 4..7). Per kernel tap it loads 8 input values (neighbouring addresses across the 8 lanes a CPU
// runs together) and 8 weights (the same for every lane) for 64 multiply-adds.

// Output channel co's bias, 0 without one.
fn bias_of(co: u32) -> f32 {
    if (p.has_bias != 0u) {
        return bias[co];
    }
    return 0.0;
}

// Input values at rows iy, columns ix of channel plane `base`; zero outside the image.
fn conv_tap4(base: i32, iy: vec4<i32>, ix: vec4<i32>) -> vec4<f32> {
    let ok = (iy >= vec4<i32>(0)) & (iy < vec4<i32>(i32(p.h))) & (ix >= vec4<i32>(0))
        & (ix < vec4<i32>(i32(p.w)));
    let idx = vec4<u32>(select(vec4<i32>(0), vec4<i32>(base) + iy * i32(p.w) + ix, ok));
    let v = vec4<f32>(x[idx.x], x[idx.y], x[idx.z], x[idx.w]);
    return select(vec4<f32>(0.0), v, ok);
}

fn conv_store(b: u32, co: u32, pix: vec4<u32>, v: vec4<f32>) {
    let npix = p.oh * p.ow;
    if (co >= p.cout) {
        return;
    }
    let bv = bias_of(co);
    let base = (b * p.cout + co) * npix;
    for (var j = 0u; j < 4u; j++) {
        if (pix[j] < npix) {
            out[base + pix[j]] = v[j] + bv;
        }
    }
}

@compute @workgroup_size(8, 4, 1)
fn conv2d_rows(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let b = wid.z;
    let co0 = wid.y * 32u + lid.y * 8u;
    let pix_a = vec4<u32>(0u, 8u, 16u, 24u) + (wid.x * 64u + lid.x);
    let pix_b = pix_a + 32u;
    let oy_a = pix_a / p.ow;
    let oy_b = pix_b / p.ow;
    let iy0_a = vec4<i32>(oy_a * p.stride_h) - i32(p.pad_top);
    let iy0_b = vec4<i32>(oy_b * p.stride_h) - i32(p.pad_top);
    let ix0_a = vec4<i32>((pix_a - oy_a * p.ow) * p.stride_w) - i32(p.pad_left);
    let ix0_b = vec4<i32>((pix_b - oy_b * p.ow) * p.stride_w) - i32(p.pad_left);
    let taps = p.kh * p.kw;
    let w_row = p.cin * taps;
    let last_co = p.cout - 1u;
    let w0_base = min(co0 + 0u, last_co) * w_row;
    let w1_base = min(co0 + 1u, last_co) * w_row;
    let w2_base = min(co0 + 2u, last_co) * w_row;
    let w3_base = min(co0 + 3u, last_co) * w_row;
    let w4_base = min(co0 + 4u, last_co) * w_row;
    let w5_base = min(co0 + 5u, last_co) * w_row;
    let w6_base = min(co0 + 6u, last_co) * w_row;
    let w7_base = min(co0 + 7u, last_co) * w_row;
    var acc0a = vec4<f32>(0.0);
    var acc0b = vec4<f32>(0.0);
    var acc1a = vec4<f32>(0.0);
    var acc1b = vec4<f32>(0.0);
    var acc2a = vec4<f32>(0.0);
    var acc2b = vec4<f32>(0.0);
    var acc3a = vec4<f32>(0.0);
    var acc3b = vec4<f32>(0.0);
    var acc4a = vec4<f32>(0.0);
    var acc4b = vec4<f32>(0.0);
    var acc5a = vec4<f32>(0.0);
    var acc5b = vec4<f32>(0.0);
    var acc6a = vec4<f32>(0.0);
    var acc6b = vec4<f32>(0.0);
    var acc7a = vec4<f32>(0.0);
    var acc7b = vec4<f32>(0.0);
    for (var ci = 0u; ci < p.cin; ci++) {
        let plane = i32((b * p.cin + ci) * p.h * p.w);
        for (var ky = 0u; ky < p.kh; ky++) {
            let iy_a = iy0_a + i32(ky);
            let iy_b = iy0_b + i32(ky);
            for (var kx = 0u; kx < p.kw; kx++) {
                let xa = conv_tap4(plane, iy_a, ix0_a + i32(kx));
                let xb = conv_tap4(plane, iy_b, ix0_b + i32(kx));
                let t = ci * taps + ky * p.kw + kx;
                let w0 = weight[w0_base + t];
                acc0a += w0 * xa;
                acc0b += w0 * xb;
                let w1 = weight[w1_base + t];
                acc1a += w1 * xa;
                acc1b += w1 * xb;
                let w2 = weight[w2_base + t];
                acc2a += w2 * xa;
                acc2b += w2 * xb;
                let w3 = weight[w3_base + t];
                acc3a += w3 * xa;
                acc3b += w3 * xb;
                let w4 = weight[w4_base + t];
                acc4a += w4 * xa;
                acc4b += w4 * xb;
                let w5 = weight[w5_base + t];
                acc5a += w5 * xa;
                acc5b += w5 * xb;
                let w6 = weight[w6_base + t];
                acc6a += w6 * xa;
                acc6b += w6 * xb;
                let w7 = weight[w7_base + t];
                acc7a += w7 * xa;
                acc7b += w7 * xb;
            }
        }
    }
    conv_store(b, co0 + 0u, pix_a, acc0a);
    conv_store(b, co0 + 0u, pix_b, acc0b);
    conv_store(b, co0 + 1u, pix_a, acc1a);
    conv_store(b, co0 + 1u, pix_b, acc1b);
    conv_store(b, co0 + 2u, pix_a, acc2a);
    conv_store(b, co0 + 2u, pix_b, acc2b);
    conv_store(b, co0 + 3u, pix_a, acc3a);
    conv_store(b, co0 + 3u, pix_b, acc3b);
    conv_store(b, co0 + 4u, pix_a, acc4a);
    conv_store(b, co0 + 4u, pix_b, acc4b);
    conv_store(b, co0 + 5u, pix_a, acc5a);
    conv_store(b, co0 + 5u, pix_b, acc5b);
    conv_store(b, co0 + 6u, pix_a, acc6a);
    conv_store(b, co0 + 6u, pix_b, acc6b);
    conv_store(b, co0 + 7u, pix_a, acc7a);
    conv_store(b, co0 + 7u, pix_b, acc7b);
}

// conv_transpose2d_rows: conv_transpose2d when stride = kernel size and padding 0 (patches that
// do not overlap, as aMUSEd's 2×2 upsampling), for adapters that run on the CPU. Workgroup
// (wx, wy, z) with z = b·kh·kw + tap: invocation (x, y) computes 8 output channels
// co = 32·wy + 8·y + 0..7 of kernel tap (ky, kx) for 8 input pixels 64·wx + x + 8·j; each
// output element is written exactly once. Per input channel: 8 input values, 8 weights (the
// same for every lane), 64 multiply-adds.
fn convt_store(b: u32, co: u32, pix: vec4<u32>, ky: u32, kx: u32, v: vec4<f32>) {
    if (co >= p.cout) {
        return;
    }
    let bv = bias_of(co);
    let base = (b * p.cout + co) * p.oh * p.ow;
    for (var j = 0u; j < 4u; j++) {
        if (pix[j] < p.h * p.w) {
            let iy = pix[j] / p.w;
            let ix = pix[j] - iy * p.w;
            out[base + (iy * p.kh + ky) * p.ow + ix * p.kw + kx] = v[j] + bv;
        }
    }
}

@compute @workgroup_size(8, 4, 1)
fn conv_transpose2d_rows(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let taps = p.kh * p.kw;
    let b = wid.z / taps;
    let tap = wid.z % taps;
    let ky = tap / p.kw;
    let kx = tap % p.kw;
    let co0 = wid.y * 32u + lid.y * 8u;
    let npix = p.h * p.w;
    let pix_a = vec4<u32>(0u, 8u, 16u, 24u) + (wid.x * 64u + lid.x);
    let pix_b = pix_a + 32u;
    let xa_i = min(pix_a, vec4<u32>(npix - 1u));
    let xb_i = min(pix_b, vec4<u32>(npix - 1u));
    let last_co = p.cout - 1u;
    let w0_off = min(co0 + 0u, last_co) * taps + tap;
    let w1_off = min(co0 + 1u, last_co) * taps + tap;
    let w2_off = min(co0 + 2u, last_co) * taps + tap;
    let w3_off = min(co0 + 3u, last_co) * taps + tap;
    let w4_off = min(co0 + 4u, last_co) * taps + tap;
    let w5_off = min(co0 + 5u, last_co) * taps + tap;
    let w6_off = min(co0 + 6u, last_co) * taps + tap;
    let w7_off = min(co0 + 7u, last_co) * taps + tap;
    var acc0a = vec4<f32>(0.0);
    var acc0b = vec4<f32>(0.0);
    var acc1a = vec4<f32>(0.0);
    var acc1b = vec4<f32>(0.0);
    var acc2a = vec4<f32>(0.0);
    var acc2b = vec4<f32>(0.0);
    var acc3a = vec4<f32>(0.0);
    var acc3b = vec4<f32>(0.0);
    var acc4a = vec4<f32>(0.0);
    var acc4b = vec4<f32>(0.0);
    var acc5a = vec4<f32>(0.0);
    var acc5b = vec4<f32>(0.0);
    var acc6a = vec4<f32>(0.0);
    var acc6b = vec4<f32>(0.0);
    var acc7a = vec4<f32>(0.0);
    var acc7b = vec4<f32>(0.0);
    for (var ci = 0u; ci < p.cin; ci++) {
        let plane = (b * p.cin + ci) * npix;
        let xa = vec4<f32>(x[plane + xa_i.x], x[plane + xa_i.y], x[plane + xa_i.z], x[plane + xa_i.w]);
        let xb = vec4<f32>(x[plane + xb_i.x], x[plane + xb_i.y], x[plane + xb_i.z], x[plane + xb_i.w]);
        let w_ci = ci * p.cout * taps;
        let w0 = weight[w_ci + w0_off];
        acc0a += w0 * xa;
        acc0b += w0 * xb;
        let w1 = weight[w_ci + w1_off];
        acc1a += w1 * xa;
        acc1b += w1 * xb;
        let w2 = weight[w_ci + w2_off];
        acc2a += w2 * xa;
        acc2b += w2 * xb;
        let w3 = weight[w_ci + w3_off];
        acc3a += w3 * xa;
        acc3b += w3 * xb;
        let w4 = weight[w_ci + w4_off];
        acc4a += w4 * xa;
        acc4b += w4 * xb;
        let w5 = weight[w_ci + w5_off];
        acc5a += w5 * xa;
        acc5b += w5 * xb;
        let w6 = weight[w_ci + w6_off];
        acc6a += w6 * xa;
        acc6b += w6 * xb;
        let w7 = weight[w_ci + w7_off];
        acc7a += w7 * xa;
        acc7b += w7 * xb;
    }
    convt_store(b, co0 + 0u, pix_a, ky, kx, acc0a);
    convt_store(b, co0 + 0u, pix_b, ky, kx, acc0b);
    convt_store(b, co0 + 1u, pix_a, ky, kx, acc1a);
    convt_store(b, co0 + 1u, pix_b, ky, kx, acc1b);
    convt_store(b, co0 + 2u, pix_a, ky, kx, acc2a);
    convt_store(b, co0 + 2u, pix_b, ky, kx, acc2b);
    convt_store(b, co0 + 3u, pix_a, ky, kx, acc3a);
    convt_store(b, co0 + 3u, pix_b, ky, kx, acc3b);
    convt_store(b, co0 + 4u, pix_a, ky, kx, acc4a);
    convt_store(b, co0 + 4u, pix_b, ky, kx, acc4b);
    convt_store(b, co0 + 5u, pix_a, ky, kx, acc5a);
    convt_store(b, co0 + 5u, pix_b, ky, kx, acc5b);
    convt_store(b, co0 + 6u, pix_a, ky, kx, acc6a);
    convt_store(b, co0 + 6u, pix_b, ky, kx, acc6b);
    convt_store(b, co0 + 7u, pix_a, ky, kx, acc7a);
    convt_store(b, co0 + 7u, pix_b, ky, kx, acc7b);
}

@compute @workgroup_size(256, 1, 1)
fn depthwise_nhwc(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let i = out_index(wid, nwg, li);
    if (i >= p.batch * p.oh * p.ow * p.cout) {
        return;
    }
    let c = i % p.cout;
    let ox = (i / p.cout) % p.ow;
    let oy = (i / (p.cout * p.ow)) % p.oh;
    let b = i / (p.cout * p.ow * p.oh);
    let n = p.cin / p.cout;
    var acc = bias_of(c);
    for (var ky = 0u; ky < p.kh; ky++) {
        var iy = i32(oy * p.stride_h + ky) - i32(p.pad_top);
        if (iy < 0 || iy >= i32(p.h)) {
            if (p.pad_mode == 0u) {
                continue;
            }
            iy = padded_index(iy, p.h);
        }
        for (var kx = 0u; kx < p.kw; kx++) {
            var ix = i32(ox * p.stride_w + kx) - i32(p.pad_left);
            if (ix < 0 || ix >= i32(p.w)) {
                if (p.pad_mode == 0u) {
                    continue;
                }
                ix = padded_index(ix, p.w);
            }
            let xi = ((b * p.h + u32(iy)) * p.w + u32(ix)) * p.cin + c * n;
            for (var j = 0u; j < n; j++) {
                acc += x[xi + j] * weight[((c * n + j) * p.kh + ky) * p.kw + kx];
            }
        }
    }
    out[i] = acc;
}

// The row or column a replicate (pad_mode 1) or reflect (2) padding reads for index i outside
// 0..len (reflection assumes a padding below len).
fn padded_index(i: i32, len: u32) -> i32 {
    let last = i32(len) - 1;
    if (p.pad_mode == 1u) {
        return clamp(i, 0, last);
    }
    if (i < 0) {
        return min(-i, last);
    }
    return max(2 * last - i, 0);
}

// conv2d_gemm: the same convolution (one group) as an implicit GEMM for GPUs: per image,
// out[co, pixel] = Σ_k weight[co, k] · patch[k, pixel] with k = (ci, ky, kx) and the patch
// gathered from x on the fly (zero outside the image). Tiled like matmul_tile64.wgsl: a
// workgroup of 8×8 invocations owns 64 output channels × 64 output pixels, invocation (x, y)
// 8 channels × 8 pixels in 16 named vec4 accumulators, K walked in steps of 16 through
// workgroup memory.

const GEMM_T: u32 = 64u;
const GEMM_TK: u32 = 16u;
const GEMM_THREADS: u32 = 64u;

var<workgroup> w_tile: array<f32, 1024>;
var<workgroup> x_tile: array<f32, 1024>;

fn w4(i: u32) -> vec4<f32> {
    return vec4<f32>(w_tile[i], w_tile[i + 1u], w_tile[i + 2u], w_tile[i + 3u]);
}

fn x4(i: u32) -> vec4<f32> {
    return vec4<f32>(x_tile[i], x_tile[i + 1u], x_tile[i + 2u], x_tile[i + 3u]);
}

fn gemm_store(out_base: u32, co: u32, pix: u32, left: vec4<f32>, right: vec4<f32>) {
    let pixels = p.oh * p.ow;
    if (co >= p.cout) {
        return;
    }
    var b = 0.0;
    if (p.has_bias != 0u) {
        b = bias[co];
    }
    for (var j = 0u; j < 8u; j++) {
        let q = pix + j;
        if (q < pixels) {
            out[out_base + co * pixels + q] = select(right[j % 4u], left[j % 4u], j < 4u) + b;
        }
    }
}

@compute @workgroup_size(8, 8, 1)
fn conv2d_gemm(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let pixels = p.oh * p.ow;
    let taps = KH * KW;
    let kdim = p.cin * taps;
    let co_base = wid.y * GEMM_T;
    let pix_base = wid.x * GEMM_T;
    let bi = wid.z;

    var acc: Acc8;

    for (var k0 = 0u; k0 < kdim; k0 += GEMM_TK) {
        // Weights [cout, cin·kh·kw]: 16 neighbouring invocations read one channel's 16 taps.
        for (var i = 0u; i < (GEMM_T * GEMM_TK) / GEMM_THREADS; i++) {
            let e = li + i * GEMM_THREADS;
            let ml = e / GEMM_TK;
            let kl = e % GEMM_TK;
            let co = co_base + ml;
            let k = k0 + kl;
            var v = 0.0;
            if (co < p.cout && k < kdim) {
                v = weight[co * kdim + k];
            }
            w_tile[kl * GEMM_T + ml] = v;
        }
        // The patch: neighbouring invocations take neighbouring output pixels of one tap.
        for (var i = 0u; i < (GEMM_T * GEMM_TK) / GEMM_THREADS; i++) {
            let e = li + i * GEMM_THREADS;
            let kl = e / GEMM_T;
            let nl = e % GEMM_T;
            x_tile[kl * GEMM_T + nl] = patch_at(bi, k0 + kl, pix_base + nl);
        }
        workgroupBarrier();

        for (var kk = 0u; kk < GEMM_TK; kk++) {
            let ai = kk * GEMM_T + lid.y * 8u;
            let a0 = w4(ai);
            let a1 = w4(ai + 4u);
            let xi = kk * GEMM_T + lid.x * 8u;
            let b0 = x4(xi);
            let b1 = x4(xi + 4u);
            acc8_fma(&acc, a0, a1, b0, b1);
        }
        workgroupBarrier();
    }

    let out_base = bi * p.cout * pixels;
    let co0 = co_base + lid.y * 8u;
    let pix = pix_base + lid.x * 8u;
    gemm_store(out_base, co0 + 0u, pix, acc.c0l, acc.c0r);
    gemm_store(out_base, co0 + 1u, pix, acc.c1l, acc.c1r);
    gemm_store(out_base, co0 + 2u, pix, acc.c2l, acc.c2r);
    gemm_store(out_base, co0 + 3u, pix, acc.c3l, acc.c3r);
    gemm_store(out_base, co0 + 4u, pix, acc.c4l, acc.c4r);
    gemm_store(out_base, co0 + 5u, pix, acc.c5l, acc.c5r);
    gemm_store(out_base, co0 + 6u, pix, acc.c6l, acc.c6r);
    gemm_store(out_base, co0 + 7u, pix, acc.c7l, acc.c7r);
}
