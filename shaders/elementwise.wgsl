// Elementwise and row-wise ops on f32 tensors (after the activation.wgsl prelude).
//
// unary:    out[i] = f(a[i]), f chosen by the override UNARY:
//           0 scale (alpha·x), 1 GELU exact (erf), 2 GELU tanh approximation,
//           3 quick-GELU x·σ(1.702x), 4 SiLU, 5 add scalar (x + alpha)
// binary:   out = alpha·a + beta·b (BINARY 0), a·b (1), a / b (2), with NumPy broadcasting over
//           up to 4 dims: out shape `shape`, operand strides a_strides / b_strides (0 = broadcast),
//           operands starting at a[offsets.x] and b[offsets.y].
// geglu:    a [rows, 2·cols] → out [rows, cols] = a[:, :cols] · GELU(a[:, cols:])
// softmax:  row-wise softmax(alpha·a) over rows × cols (one workgroup per row)
// modulate: adaptive modulation out = a·(1 + scale) + shift over a [rows, cols], where row r
//           of batch item r / offsets.w reads scale at b[(r / offsets.w)·offsets.z + offsets.x + j]
//           and shift at offset offsets.y instead of offsets.x.
//
// Thread mapping: one invocation per output element (256 per workgroup, linearised over x, y).

// struct Params: generated from the Rust declaration (ops::elementwise::Params, kernel_params!)
// and appended by shaders::Module::source.
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

override UNARY: u32 = 0u;
override BINARY: u32 = 0u;

const WG: u32 = 256u;

fn apply_unary(x: f32) -> f32 {
    switch UNARY {
        case 0u: { return p.alpha * x; }
        case 5u: { return x + p.alpha; }
        default: { return activation(UNARY, x); }
    }
}

fn flat_index(wid: vec3<u32>, nwg: vec3<u32>, li: u32) -> u32 {
    return (wid.x + wid.y * nwg.x) * WG + li;
}

@compute @workgroup_size(256, 1, 1)
fn unary(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let i = flat_index(wid, nwg, li);
    if (i >= p.n) {
        return;
    }
    out[i] = apply_unary(a[i]);
}

@compute @workgroup_size(256, 1, 1)
fn binary(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let i = flat_index(wid, nwg, li);
    if (i >= p.n) {
        return;
    }
    // Unravel i over shape (row-major, dims 0..3).
    let i3 = i % p.shape.w;
    let r2 = i / p.shape.w;
    let i2 = r2 % p.shape.z;
    let r1 = r2 / p.shape.z;
    let i1 = r1 % p.shape.y;
    let i0 = r1 / p.shape.y;
    let idx = vec4<u32>(i0, i1, i2, i3);
    let ia = dot(idx, p.a_strides) + p.offsets.x;
    let ib = dot(idx, p.b_strides) + p.offsets.y;
    let x = a[ia];
    let z = b[ib];
    switch BINARY {
        case 1u: { out[i] = x * z; }
        case 2u: { out[i] = x / z; }
        default: { out[i] = p.alpha * x + p.beta * z; }
    }
}

@compute @workgroup_size(256, 1, 1)
fn geglu(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let i = flat_index(wid, nwg, li);
    if (i >= p.rows * p.cols) {
        return;
    }
    let r = i / p.cols;
    let j = i % p.cols;
    let base = r * 2u * p.cols;
    out[i] = a[base + j] * gelu_erf(a[base + p.cols + j]);
}

var<workgroup> red: array<f32, WG>;

fn reduce(li: u32, v: f32, is_max: bool) -> f32 {
    red[li] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (li < s) {
            red[li] = select(red[li] + red[li + s], max(red[li], red[li + s]), is_max);
        }
        workgroupBarrier();
    }
    let r = red[0];
    workgroupBarrier();
    return r;
}

@compute @workgroup_size(256, 1, 1)
fn softmax(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let row = wid.x + wid.y * nwg.x;
    if (row >= p.rows) {
        return;
    }
    let base = row * p.cols;
    var mx = -3.0e38;
    for (var j = li; j < p.cols; j += WG) {
        mx = max(mx, p.alpha * a[base + j]);
    }
    mx = reduce(li, mx, true);
    var s = 0.0;
    for (var j = li; j < p.cols; j += WG) {
        s += exp(p.alpha * a[base + j] - mx);
    }
    let inv = 1.0 / reduce(li, s, false);
    for (var j = li; j < p.cols; j += WG) {
        out[base + j] = exp(p.alpha * a[base + j] - mx) * inv;
    }
}

@compute @workgroup_size(256, 1, 1)
fn modulate(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let i = flat_index(wid, nwg, li);
    if (i >= p.rows * p.cols) {
        return;
    }
    let r = i / p.cols;
    let j = i % p.cols;
    let m = (r / p.offsets.w) * p.offsets.z;
    let scale = b[m + p.offsets.x + j];
    let shift = b[m + p.offsets.y + j];
    out[i] = a[i] * (1.0 + scale) + shift;
}
