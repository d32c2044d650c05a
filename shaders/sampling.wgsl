// Row-wise selection over logits [rows, cols] (row r starts at r·row_stride).
//
// argmax:       ids[r] = first index of the maximum, vals[r] = the maximum.
// topk:         ids[r·k + t], vals[r·k + t] = the t-th largest (ties: lower index first).
// categorical:  draws ids[r] from softmax(logits[r] / temperature) by inverse CDF with the
//               uniform u = uniforms[r] ∈ [0, 1) supplied by the caller's seeded RNG, and
//               writes vals[r] = softmax(logits[r])[ids[r]] (the temperature-free probability
//               MaskGIT and aMUSEd use as confidence). A row whose softmax total is not finite
//               (overflowing logits) gets ids[r] = 0xffffffff and vals[r] = 0.
// nearest_code: vector quantisation (below).
// typical_filter: locally typical sampling's filter (Paella v1; Meister et al.): with
//               logp = log_softmax(row), H = −Σ p·logp and score_j = |−logp_j − H|, keeps the
//               tokens of lowest score up to the first one where their cumulative probability
//               reaches `temperature` (used as the mass) — ties with it kept — and writes the
//               row to vals with every other logit set to −3e38. The threshold score is found
//               exactly by bisection on the scores' bit patterns (non-negative floats order as
//               their bits), no sort.
//
// Thread mapping: one workgroup of 256 invocations per row (categorical_rows, for CPU adapters:
// one invocation per row).

// struct Params: generated from the Rust declaration (ops::sampling::Params, kernel_params!)
// and appended by shaders::Module::source.
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(2) var<storage, read> uniforms: array<f32>;
@group(0) @binding(3) var<storage, read_write> ids: array<u32>;
@group(0) @binding(4) var<storage, read_write> vals: array<f32>;

const WG: u32 = 256u;
const NEG: f32 = -3.0e38;
const NONE: u32 = 0xffffffffu;

var<workgroup> red_v: array<f32, WG>;
var<workgroup> red_i: array<u32, WG>;

// (v, i) beats (w, j) when v > w, or v == w and i < j; NONE never wins.
fn better(v: f32, i: u32, w: f32, j: u32) -> bool {
    if (i == NONE) {
        return false;
    }
    if (j == NONE) {
        return true;
    }
    return v > w || (v == w && i < j);
}

// Workgroup arg-max of (v, i); every invocation gets the winner.
fn reduce_best(li: u32, v: f32, i: u32) -> vec2<u32> {
    red_v[li] = v;
    red_i[li] = i;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (li < s && better(red_v[li + s], red_i[li + s], red_v[li], red_i[li])) {
            red_v[li] = red_v[li + s];
            red_i[li] = red_i[li + s];
        }
        workgroupBarrier();
    }
    let r = vec2<u32>(bitcast<u32>(red_v[0]), red_i[0]);
    workgroupBarrier();
    return r;
}

fn row_index(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wid.x + wid.y * nwg.x;
}

@compute @workgroup_size(256, 1, 1)
fn argmax(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let row = row_index(wid, nwg);
    if (row >= p.rows) {
        return;
    }
    let base = row * p.row_stride;
    var bv = NEG;
    var bi = NONE;
    for (var j = li; j < p.cols; j += WG) {
        let v = logits[base + j];
        if (better(v, j, bv, bi)) {
            bv = v;
            bi = j;
        }
    }
    let best = reduce_best(li, bv, bi);
    if (li == 0u) {
        ids[row] = best.y;
        vals[row] = bitcast<f32>(best.x);
    }
}

@compute @workgroup_size(256, 1, 1)
fn topk(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let row = row_index(wid, nwg);
    if (row >= p.rows) {
        return;
    }
    let base = row * p.row_stride;
    var prev_v = 0.0;
    var prev_i = NONE;
    for (var t = 0u; t < p.k; t++) {
        var bv = NEG;
        var bi = NONE;
        for (var j = li; j < p.cols; j += WG) {
            let v = logits[base + j];
            // Only elements ranked after the previous pick are eligible.
            let eligible = prev_i == NONE || better(prev_v, prev_i, v, j);
            if (eligible && better(v, j, bv, bi)) {
                bv = v;
                bi = j;
            }
        }
        let best = reduce_best(li, bv, bi);
        prev_v = bitcast<f32>(best.x);
        prev_i = best.y;
        if (li == 0u) {
            ids[row * p.k + t] = prev_i;
            vals[row * p.k + t] = prev_v;
        }
    }
}

var<workgroup> scan: array<f32, WG>;

fn reduce_sum(li: u32, v: f32) -> f32 {
    red_v[li] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (li < s) {
            red_v[li] += red_v[li + s];
        }
        workgroupBarrier();
    }
    // Uniform across the workgroup (a WGSL uniformity requirement where it steers a loop
    // around barriers).
    let r = workgroupUniformLoad(&red_v[0]);
    workgroupBarrier();
    return r;
}

@compute @workgroup_size(256, 1, 1)
fn categorical(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let row = row_index(wid, nwg);
    if (row >= p.rows) {
        return;
    }
    let base = row * p.row_stride;
    var mx = NEG;
    for (var j = li; j < p.cols; j += WG) {
        mx = max(mx, logits[base + j]);
    }
    mx = bitcast<f32>(reduce_best(li, mx, li).x);

    // Each invocation owns a contiguous chunk, so a prefix over invocations is a CDF.
    let chunk = (p.cols + WG - 1u) / WG;
    let start = min(li * chunk, p.cols);
    let end = min(start + chunk, p.cols);
    let inv_t = 1.0 / p.temperature;
    let sums = chunk_sums(base, start, end, mx, inv_t);
    let part = sums.x;
    let total1 = reduce_sum(li, sums.y);

    // Inclusive Hillis–Steele scan of the chunk sums.
    scan[li] = part;
    workgroupBarrier();
    for (var off = 1u; off < WG; off <<= 1u) {
        var add = 0.0;
        if (li >= off) {
            add = scan[li - off];
        }
        workgroupBarrier();
        scan[li] += add;
        workgroupBarrier();
    }
    let incl = scan[li];
    var excl = 0.0;
    if (li > 0u) {
        excl = scan[li - 1u];
    }
    // The scan's entry for the chunk holding the last column. The empty chunks after it add
    // their zeros in other orders, so their entries can round above or below it: one of them
    // must never own the goal (it would pick a column past the row).
    let total = scan[(max(p.cols, 1u) - 1u) / chunk];
    // Non-finite or empty totals (overflowing logits) have no valid choice: a defined result,
    // NONE, which the host rejects as outside the codebook.
    if (!(total > 0.0 && total <= 3.4e38 && total1 > 0.0 && total1 <= 3.4e38)) {
        if (li == 0u) {
            ids[row] = NONE;
            vals[row] = 0.0;
        }
        return;
    }
    // Strictly below total, so a non-empty chunk owns the goal: the first whose entry exceeds it.
    let goal = min(uniforms[row] * total, bitcast<f32>(bitcast<u32>(total) - 1u));
    if (start < end && excl <= goal && goal < incl) {
        let pick = pick_in_chunk(base, start, end, mx, inv_t, excl, goal);
        ids[row] = pick;
        vals[row] = exp(logits[base + pick] - mx) / total1;
    }
}

// The row's chunk [start, end) summed in order: exp((logit − mx) · inv_t) and exp(logit − mx).
fn chunk_sums(base: u32, start: u32, end: u32, mx: f32, inv_t: f32) -> vec2<f32> {
    var part = 0.0;
    var part1 = 0.0;
    for (var j = start; j < end; j++) {
        let l = logits[base + j] - mx;
        part += exp(l * inv_t);
        part1 += exp(l);
    }
    return vec2<f32>(part, part1);
}

// The column of the row's chunk [start, end) where the running sum of exp((logit − mx) · inv_t),
// from excl, first exceeds goal; where rounding leaves it short, the chunk's last column with
// weight.
fn pick_in_chunk(
    base: u32,
    start: u32,
    end: u32,
    mx: f32,
    inv_t: f32,
    excl: f32,
    goal: f32,
) -> u32 {
    var acc = excl;
    var last = start;
    for (var j = start; j < end; j++) {
        let e = exp((logits[base + j] - mx) * inv_t);
        if (e > 0.0) {
            last = j;
        }
        acc += e;
        if (acc > goal) {
            return j;
        }
    }
    return last;
}

// nearest_code: ids[r] = argmin_j ‖z_r − codebook_j‖² over k codes of `cols` dims (first on
// ties), vals[r] = that squared distance. z rows come in through `logits`.
@group(0) @binding(5) var<storage, read> codebook: array<f32>;

@compute @workgroup_size(256, 1, 1)
fn nearest_code(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let row = row_index(wid, nwg);
    if (row >= p.rows) {
        return;
    }
    let base = row * p.row_stride;
    var bv = NEG;
    var bi = NONE;
    for (var j = li; j < p.k; j += WG) {
        var d = 0.0;
        for (var c = 0u; c < p.cols; c++) {
            let diff = logits[base + c] - codebook[j * p.cols + c];
            d += diff * diff;
        }
        if (better(-d, j, bv, bi)) {
            bv = -d;
            bi = j;
        }
    }
    let best = reduce_best(li, bv, bi);
    if (li == 0u) {
        ids[row] = best.y;
        vals[row] = -bitcast<f32>(best.x);
    }
}

fn reduce_max(li: u32, v: f32) -> f32 {
    red_v[li] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (li < s) {
            red_v[li] = max(red_v[li], red_v[li + s]);
        }
        workgroupBarrier();
    }
    let r = workgroupUniformLoad(&red_v[0]);
    workgroupBarrier();
    return r;
}

@compute @workgroup_size(256, 1, 1)
fn typical_filter(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let r = row_index(wid, nwg);
    if (r >= p.rows) {
        return;
    }
    let base = r * p.row_stride;
    var m = NEG;
    for (var j = li; j < p.cols; j += WG) {
        m = max(m, logits[base + j]);
    }
    m = reduce_max(li, m);
    var s = 0.0;
    for (var j = li; j < p.cols; j += WG) {
        s += exp(logits[base + j] - m);
    }
    let lse = m + log(reduce_sum(li, s));
    var h = 0.0;
    for (var j = li; j < p.cols; j += WG) {
        let lp = logits[base + j] - lse;
        let pj = exp(lp);
        if (pj > 0.0) {
            h -= pj * lp;
        }
    }
    let entropy = reduce_sum(li, h);
    // Smallest score bit pattern t whose set {score ≤ t} holds at least the mass; the full
    // range (+inf) holds all of it. 32 halvings cover the range; once lo = hi they change
    // nothing (a fixed count keeps the barriers in uniform control flow).
    var lo = 0u;
    var hi = 0x7f800000u;
    for (var it = 0u; it < 32u; it++) {
        let mid = lo + (hi - lo) / 2u;
        var c = 0.0;
        for (var j = li; j < p.cols; j += WG) {
            let lp = logits[base + j] - lse;
            if (bitcast<u32>(abs(-lp - entropy)) <= mid) {
                c += exp(lp);
            }
        }
        if (reduce_sum(li, c) >= p.temperature) {
            hi = mid;
        } else {
            lo = mid + 1u;
        }
    }
    let out = r * p.cols;
    for (var j = li; j < p.cols; j += WG) {
        let x = logits[base + j];
        let keep = bitcast<u32>(abs(-(x - lse) - entropy)) <= lo;
        vals[out + j] = select(NEG, x, keep);
    }
}

// categorical_rows: `categorical` for adapters that run on the CPU — one invocation per row, no
// workgroup memory and no barriers (lavapipe runs each barrier of a 256-invocation workgroup as
// a switch between its 32 SIMD groups; `categorical`'s ~30 per row cost 10 ms a step at 256 rows
// of 1 024 logits). It does `categorical`'s float operations in the same order — the same
// chunks of the row summed in order, the same pairwise tree for the temperature-free total, the
// same Hillis–Steele scan over the 256 chunk sums — in private arrays, so its ids and values
// are `categorical`'s bit for bit (tested). Row = 8 · workgroup + invocation.
@compute @workgroup_size(8, 1, 1)
fn categorical_rows(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let row = row_index(wid, nwg) * 8u + li;
    if (row >= p.rows) {
        return;
    }
    let base = row * p.row_stride;
    // The maximum (exact in any order).
    var mx = NEG;
    for (var j = 0u; j < p.cols; j++) {
        mx = max(mx, logits[base + j]);
    }
    // Chunk v of the row is what invocation v of `categorical` sums.
    let chunk = (p.cols + WG - 1u) / WG;
    let inv_t = 1.0 / p.temperature;
    var scan_v: array<f32, WG>;
    var sum_v: array<f32, WG>;
    for (var v = 0u; v < WG; v++) {
        let start = min(v * chunk, p.cols);
        let end = min(start + chunk, p.cols);
        let sums = chunk_sums(base, start, end, mx, inv_t);
        scan_v[v] = sums.x;
        sum_v[v] = sums.y;
    }
    // reduce_sum's tree: in round s, entry i < s adds entry i + s (not yet changed this round).
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        for (var i = 0u; i < s; i++) {
            sum_v[i] += sum_v[i + s];
        }
    }
    let total1 = sum_v[0];
    // The inclusive scan: in round off, entry i ≥ off adds entry i − off as it was before the
    // round, kept in sum_v (free once total1 is read). (In place and descending is the same
    // arithmetic, but Mesa 26's lavapipe miscompiled that loop: wrong draws.)
    for (var off = 1u; off < WG; off <<= 1u) {
        for (var i = 0u; i < WG; i++) {
            sum_v[i] = scan_v[i];
        }
        for (var i = off; i < WG; i++) {
            scan_v[i] += sum_v[i - off];
        }
    }
    let total = scan_v[(max(p.cols, 1u) - 1u) / chunk];
    if (!(total > 0.0 && total <= 3.4e38 && total1 > 0.0 && total1 <= 3.4e38)) {
        ids[row] = NONE;
        vals[row] = 0.0;
        return;
    }
    let goal = min(uniforms[row] * total, bitcast<f32>(bitcast<u32>(total) - 1u));
    for (var v = 0u; v < WG; v++) {
        let start = min(v * chunk, p.cols);
        let end = min(start + chunk, p.cols);
        var excl = 0.0;
        if (v > 0u) {
            excl = scan_v[v - 1u];
        }
        if (start < end && excl <= goal && goal < scan_v[v]) {
            let pick = pick_in_chunk(base, start, end, mx, inv_t, excl, goal);
            ids[row] = pick;
            vals[row] = exp(logits[base + pick] - mx) / total1;
            return;
        }
    }
}
