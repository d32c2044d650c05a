// Fused multi-head attention: O = softmax(Q·Kᵀ·scale [+ causal mask]) · V, online softmax.
//
// Q: rows of [batch, lq] with row stride q_stride; head h reads columns
//    q_offset + h·head_dim .. + head_dim (so Q, K, V may be slices of one fused projection).
// K, V: likewise over [batch, lk]. O: [batch, lq, heads·head_dim] written at o_stride.
// causal: query i sees keys j ≤ i + (lk − lq).
//
// Thread mapping: workgroup (x, h, b) handles 64 queries of head h in batch b, one query per
// invocation. Keys are walked in tiles of 16 staged in workgroup memory; each invocation keeps
// its running max, denominator and output row in registers, so lk is unbounded.

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q_buf: array<f32>;
@group(0) @binding(2) var<storage, read> k_buf: array<f32>;
@group(0) @binding(3) var<storage, read> v_buf: array<f32>;
@group(0) @binding(4) var<storage, read_write> o_buf: array<f32>;

const BQ: u32 = 64u;
const BK: u32 = 16u;
const MAX_D: u32 = 128u;
const NEG: f32 = -3.0e38;

var<workgroup> k_tile: array<f32, 2048>; // BK * MAX_D
var<workgroup> v_tile: array<f32, 2048>;

@compute @workgroup_size(64, 1, 1)
fn attention(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let d = p.head_dim;
    let h = wid.y;
    let b = wid.z;
    let qi = wid.x * BQ + li;
    let valid = qi < p.lq;

    var q: array<f32, MAX_D>;
    var acc: array<f32, MAX_D>;
    if (valid) {
        let q_base = b * p.q_batch_stride + qi * p.q_stride + p.q_offset + h * d;
        for (var j = 0u; j < d; j++) {
            q[j] = q_buf[q_base + j] * p.scale;
            acc[j] = 0.0;
        }
    }
    // Causal: query qi sees keys < qi + 1 + lk - lq (computed in i32; lk may be < lq).
    let shift = i32(p.lk) - i32(p.lq);
    let my_end = clamp(i32(qi) + 1 + shift, 0, i32(p.lk));
    // Keys any query of this workgroup can see (workgroup-uniform loop bound).
    let causal = p.causal != 0u;
    let wg_end = select(p.lk, u32(clamp(i32(wid.x * BQ + BQ) + shift, 0, i32(p.lk))), causal);
    let key_end = select(p.lk, u32(my_end), causal);

    var m = NEG;
    var l = 0.0;
    let k_base = b * p.k_batch_stride + p.k_offset + h * d;
    let v_base = b * p.v_batch_stride + p.v_offset + h * d;

    for (var t0 = 0u; t0 < wg_end; t0 += BK) {
        for (var e = li; e < BK * d; e += BQ) {
            let kj = e / d;
            let c = e % d;
            let key = t0 + kj;
            var kv = 0.0;
            var vv = 0.0;
            if (key < p.lk) {
                kv = k_buf[k_base + key * p.k_stride + c];
                vv = v_buf[v_base + key * p.v_stride + c];
            }
            k_tile[kj * MAX_D + c] = kv;
            v_tile[kj * MAX_D + c] = vv;
        }
        workgroupBarrier();

        if (valid) {
            var s: array<f32, BK>;
            var tile_max = NEG;
            for (var kj = 0u; kj < BK; kj++) {
                var sc = NEG;
                if (t0 + kj < key_end) {
                    sc = 0.0;
                    for (var j = 0u; j < d; j++) {
                        sc += q[j] * k_tile[kj * MAX_D + j];
                    }
                }
                s[kj] = sc;
                tile_max = max(tile_max, sc);
            }
            if (tile_max > NEG) {
                let m_new = max(m, tile_max);
                let corr = exp(m - m_new);
                l *= corr;
                for (var j = 0u; j < d; j++) {
                    acc[j] *= corr;
                }
                for (var kj = 0u; kj < BK; kj++) {
                    if (s[kj] > NEG) {
                        let pr = exp(s[kj] - m_new);
                        l += pr;
                        for (var j = 0u; j < d; j++) {
                            acc[j] += pr * v_tile[kj * MAX_D + j];
                        }
                    }
                }
                m = m_new;
            }
        }
        workgroupBarrier();
    }

    if (valid) {
        var inv = 0.0;
        if (l > 0.0) {
            inv = 1.0 / l;
        }
        let o_base = b * p.o_batch_stride + qi * p.o_stride + h * d;
        for (var j = 0u; j < d; j++) {
            o_buf[o_base + j] = acc[j] * inv;
        }
    }
}
