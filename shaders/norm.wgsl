// Normalisations. One workgroup of 256 invocations per normalised group; two-pass statistics
// (mean, then centred variance) reduced in workgroup memory, in f32.
//
// layer_norm: rows × cols, element j of row r at
//     base(r) + j·elem_stride,  base(r) = (r / inner)·outer_stride + r % inner
//   (channels-last rows: inner = 1, outer_stride = cols, elem_stride = 1;
//    NCHW channel rows: inner = H·W, outer_stride = C·H·W, elem_stride = H·W).
//   flags: 1 weight, 2 bias, 4 subtract mean (off = RMS norm), 8 SiLU after, 16 adaptive
//   modulation after the affine terms: y·(1 + scale) + shift with row r's [scale | shift] at
//   emb[(r / mod_rows)·2·cols ..] (diffusers' AdaLayerNormContinuous / scale-shift split).
// group_norm: x NCHW [rows = batch, cols = C, inner = H·W], `groups` groups of C/groups
//   channels; per-channel weight/bias (flags 1, 2), optional SiLU (flag 8). Biased variance.
// grn_stats / grn_apply: global response norm on channels-last [rows = batch, inner = H·W,
//   cols = C]: G = ‖x‖₂ over H·W per channel, N = G / (mean_c G + eps),
//   y = weight·(x·N) + bias + x.

// struct Params: generated from the Rust declaration (ops::norm::Params, kernel_params!)
// and appended by shaders::Module::source.
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> weight: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;
@group(0) @binding(5) var<storage, read_write> stats: array<f32>;
@group(0) @binding(6) var<storage, read> emb: array<f32>;

const WG: u32 = 256u;
const HAS_WEIGHT: u32 = 1u;
const HAS_BIAS: u32 = 2u;
const SUBTRACT_MEAN: u32 = 4u;
const SILU: u32 = 8u;
const MODULATE: u32 = 16u;

var<workgroup> red: array<f32, WG>;

fn reduce_sum(li: u32, v: f32) -> f32 {
    red[li] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (li < s) {
            red[li] += red[li + s];
        }
        workgroupBarrier();
    }
    let r = red[0];
    workgroupBarrier();
    return r;
}

fn finish(v: f32, c: u32, row: u32) -> f32 {
    var o = v;
    if ((p.flags & HAS_WEIGHT) != 0u) {
        o *= weight[c];
    }
    if ((p.flags & HAS_BIAS) != 0u) {
        o += bias[c];
    }
    if ((p.flags & MODULATE) != 0u) {
        let m = (row / p.mod_rows) * 2u * p.cols;
        o = o * (1.0 + emb[m + c]) + emb[m + p.cols + c];
    }
    if ((p.flags & SILU) != 0u) {
        o = o / (1.0 + exp(-o));
    }
    return o;
}

@compute @workgroup_size(256, 1, 1)
fn layer_norm(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let row = wid.x + wid.y * nwg.x;
    if (row >= p.rows) {
        return;
    }
    let base = (row / p.inner) * p.outer_stride + row % p.inner;
    let n = f32(p.cols);
    var mean = 0.0;
    if ((p.flags & SUBTRACT_MEAN) != 0u) {
        var s = 0.0;
        for (var j = li; j < p.cols; j += WG) {
            s += x[base + j * p.elem_stride];
        }
        mean = reduce_sum(li, s) / n;
    }
    var ss = 0.0;
    for (var j = li; j < p.cols; j += WG) {
        let d = x[base + j * p.elem_stride] - mean;
        ss += d * d;
    }
    let rstd = inverseSqrt(reduce_sum(li, ss) / n + p.eps);
    for (var j = li; j < p.cols; j += WG) {
        let i = base + j * p.elem_stride;
        y[i] = finish((x[i] - mean) * rstd, j, row);
    }
}

@compute @workgroup_size(256, 1, 1)
fn group_norm(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let g = wid.x;
    let b = wid.y;
    let cpg = p.cols / p.groups;
    let count = cpg * p.inner;
    let base = b * p.cols * p.inner + g * count;
    let n = f32(count);
    var s = 0.0;
    for (var e = li; e < count; e += WG) {
        s += x[base + e];
    }
    let mean = reduce_sum(li, s) / n;
    var ss = 0.0;
    for (var e = li; e < count; e += WG) {
        let d = x[base + e] - mean;
        ss += d * d;
    }
    let rstd = inverseSqrt(reduce_sum(li, ss) / n + p.eps);
    for (var e = li; e < count; e += WG) {
        let c = g * cpg + e / p.inner;
        y[base + e] = finish((x[base + e] - mean) * rstd, c, 0u);
    }
}

// group_norm in two passes for GPUs: workgroup (piece, g, b) takes values
// [piece·chunk_len, (piece + 1)·chunk_len) of group g (clipped to the group) and writes their
// count, mean and sum of squared deviations to stats[((b·G + g)·chunks + piece)·3 ..]; then
// group_norm_apply's workgroup (piece, g, b) combines the group's pieces (Chan et al.'s
// pairwise update) and normalizes the same values.
fn piece_range(piece: u32, count: u32) -> vec2<u32> {
    let start = min(piece * p.chunk_len, count);
    return vec2<u32>(start, min(start + p.chunk_len, count));
}

@compute @workgroup_size(256, 1, 1)
fn group_norm_partial(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let g = wid.y;
    let b = wid.z;
    let count = (p.cols / p.groups) * p.inner;
    let base = b * p.cols * p.inner + g * count;
    let range = piece_range(wid.x, count);
    let n = f32(range.y - range.x);
    var s = 0.0;
    for (var e = range.x + li; e < range.y; e += WG) {
        s += x[base + e];
    }
    let mean = reduce_sum(li, s) / max(n, 1.0);
    var ss = 0.0;
    for (var e = range.x + li; e < range.y; e += WG) {
        let d = x[base + e] - mean;
        ss += d * d;
    }
    let m2 = reduce_sum(li, ss);
    if (li == 0u) {
        let at = ((b * p.groups + g) * p.chunks + wid.x) * 3u;
        stats[at] = n;
        stats[at + 1u] = mean;
        stats[at + 2u] = m2;
    }
}

@compute @workgroup_size(256, 1, 1)
fn group_norm_apply(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let g = wid.y;
    let b = wid.z;
    let cpg = p.cols / p.groups;
    let count = cpg * p.inner;
    let base = b * p.cols * p.inner + g * count;
    // Every invocation combines the pieces itself (at most 64, read from cache).
    var n = 0.0;
    var mean = 0.0;
    var m2 = 0.0;
    let first = (b * p.groups + g) * p.chunks * 3u;
    for (var i = 0u; i < p.chunks; i++) {
        let nb = stats[first + 3u * i];
        if (nb > 0.0) {
            let d = stats[first + 3u * i + 1u] - mean;
            let total = n + nb;
            mean += d * nb / total;
            m2 += stats[first + 3u * i + 2u] + d * d * n * nb / total;
            n = total;
        }
    }
    let rstd = inverseSqrt(m2 / n + p.eps);
    let range = piece_range(wid.x, count);
    for (var e = range.x + li; e < range.y; e += WG) {
        let c = g * cpg + e / p.inner;
        y[base + e] = finish((x[base + e] - mean) * rstd, c, 0u);
    }
}

// For GPUs, grn_stats in two passes that fill the chip: grn_sumsq writes G_c = ‖x‖₂ over
// H·W into stats[b·C + c] — a workgroup takes 32 channels of one batch item, 8 lanes per
// channel splitting the positions (neighbouring lanes read neighbouring channels) — and
// grn_mean (one workgroup per batch item) divides by the mean over C + eps.
@compute @workgroup_size(256, 1, 1)
fn grn_sumsq(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let b = wid.y;
    let c = wid.x * 32u + li % 32u;
    let lane = li / 32u;
    var ss = 0.0;
    if (c < p.cols) {
        let base = b * p.inner * p.cols + c;
        for (var t = lane; t < p.inner; t += 8u) {
            let v = x[base + t * p.cols];
            ss += v * v;
        }
    }
    red[li] = ss;
    workgroupBarrier();
    if (li < 32u && c < p.cols) {
        var total = 0.0;
        for (var l = 0u; l < 8u; l++) {
            total += red[li + 32u * l];
        }
        stats[b * p.cols + c] = sqrt(total);
    }
}

@compute @workgroup_size(256, 1, 1)
fn grn_mean(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let b = wid.x;
    var total = 0.0;
    for (var c = li; c < p.cols; c += WG) {
        total += stats[b * p.cols + c];
    }
    let mean = reduce_sum(li, total) / f32(p.cols);
    for (var c = li; c < p.cols; c += WG) {
        stats[b * p.cols + c] = stats[b * p.cols + c] / (mean + p.eps);
    }
}

// stats[b·C + c] = G_c / (mean G + eps). One workgroup per batch item.
@compute @workgroup_size(256, 1, 1)
fn grn_stats(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let b = wid.x;
    let c_count = p.cols;
    let base = b * p.inner * c_count;
    var total = 0.0;
    for (var c = li; c < c_count; c += WG) {
        var ss = 0.0;
        for (var t = 0u; t < p.inner; t++) {
            let v = x[base + t * c_count + c];
            ss += v * v;
        }
        let g = sqrt(ss);
        stats[b * c_count + c] = g;
        total += g;
    }
    let mean = reduce_sum(li, total) / f32(c_count);
    for (var c = li; c < c_count; c += WG) {
        stats[b * c_count + c] = stats[b * c_count + c] / (mean + p.eps);
    }
}

@compute @workgroup_size(256, 1, 1)
fn grn_apply(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let i = (wid.x + wid.y * nwg.x) * WG + li;
    let total = p.rows * p.inner * p.cols;
    if (i >= total) {
        return;
    }
    let c = i % p.cols;
    let b = i / (p.inner * p.cols);
    let v = x[i];
    y[i] = weight[c] * (v * stats[b * p.cols + c]) + bias[c] + v;
}

// layer_norm_rows: layer_norm for adapters that run on the CPU; same bindings and result. One
// invocation per row walks it serially (no workgroup memory, no barriers); neighbouring lanes
// take neighbouring rows, which for NCHW channel rows are neighbouring addresses.
@compute @workgroup_size(64, 1, 1)
fn layer_norm_rows(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let row = (wid.x + wid.y * nwg.x) * 64u + li;
    if (row >= p.rows) {
        return;
    }
    let base = (row / p.inner) * p.outer_stride + row % p.inner;
    let n = f32(p.cols);
    var mean = 0.0;
    if ((p.flags & SUBTRACT_MEAN) != 0u) {
        var s = 0.0;
        for (var j = 0u; j < p.cols; j++) {
            s += x[base + j * p.elem_stride];
        }
        mean = s / n;
    }
    var ss = 0.0;
    for (var j = 0u; j < p.cols; j++) {
        let d = x[base + j * p.elem_stride] - mean;
        ss += d * d;
    }
    let rstd = inverseSqrt(ss / n + p.eps);
    for (var j = 0u; j < p.cols; j++) {
        let i = base + j * p.elem_stride;
        y[i] = finish((x[i] - mean) * rstd, j, row);
    }
}
