// 2-D convolution family on NCHW f32 tensors.
//
// conv2d:            out[b, co, oy, ox] = bias[co] + Σ_{ci ∈ group(co), ky, kx}
//                        x[b, ci, oy·sh + ky − pad_top, ox·sw + kx − pad_left] · w[co, ci, ky, kx]
//                    weight [cout, cin/groups, kh, kw] (PyTorch layout); zero padding, which may
//                    be asymmetric (the op derives oh/ow from all four sides).
// conv_transpose2d:  out[b, co, oy, ox] = bias[co] + Σ x[b, ci, iy, ix] · w[ci, co, ky, kx] over
//                    oy = iy·sh − pad_top + ky (likewise x); weight [cin, cout, kh, kw], groups 1.
// upsample_nearest:  out[b, c, y, x] = x[b, c, y / stride_h, x / stride_w] (integer factor).
// pad2d:             out[b, c, y, x] = x[b, c, y − pad_top, x − pad_left] inside, else 0.
//
// Thread mapping: one invocation per output element.

struct Params {
    batch: u32,
    cin: u32,
    h: u32,
    w: u32,
    cout: u32,
    oh: u32,
    ow: u32,
    groups: u32,
    kh: u32,
    kw: u32,
    stride_h: u32,
    stride_w: u32,
    pad_top: u32,
    pad_left: u32,
    has_bias: u32,
    _pad0: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> weight: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;

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
