// Flash attention for GPUs (the Tiled family): the same operation and Params as attention.wgsl.
//
// Thread mapping: workgroup (x, h, b) owns 32 queries of head h in batch b, with four
// invocations per query: invocation li serves query row li / 4 and, as lane li % 4, the vec4
// columns lane, lane + 4, lane + 8, … of the head (so a lane's share of q and of the output
// accumulator is at most 8 vec4s, and occupancy stays high). Keys and values stream through
// workgroup memory 16 at a time; each lane's partial dot products go through workgroup memory
// once so that every lane of a query sees all 16 scores, and the softmax is online (running
// max and denominator, output rescaled per tile). The dispatch covers batch × heads × query
// tiles: [2, 16, 256] queries give 256 workgroups of 128 invocations.
//
// Workgroup memory: 16 keys and 16 values of up to 128 columns (16 KiB) + 128 × 16 partial
// scores (8 KiB). Needs head_dim % 4 == 0, head_dim ≤ 128, every stride and offset a multiple of
// 4. D4 = head_dim / 4 is an override constant, so every loop over the head has a fixed trip
// count.

// p, q_buf, k_buf, v_buf, o_buf, visible_keys: attention_vec4_io.wgsl (prepended); Params:
// ops::attention::Params (appended).

// head_dim / 4.
override D4: u32 = 16u;
const MAX_D4: u32 = 32u;
// vec4 columns per lane: ⌈MAX_D4 / 4⌉.
const PER_LANE: u32 = 8u;
const ROWS: u32 = 32u;
const LANES: u32 = 4u;
const BC: u32 = 16u;
const NEG: f32 = -3.0e38;

var<workgroup> k_tile: array<vec4<f32>, 512>; // BC × MAX_D4
var<workgroup> v_tile: array<vec4<f32>, 512>;
var<workgroup> partial: array<f32, 2048>; // (ROWS · LANES) × BC

@compute @workgroup_size(128, 1, 1)
fn attention_flash(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let h = wid.y;
    let b = wid.z;
    let r = li / LANES;
    let lane = li % LANES;
    let qi = wid.x * ROWS + r;
    let row = min(qi, p.lq - 1u);
    let col4 = h * p.head_dim / 4u;

    var q: array<vec4<f32>, PER_LANE>;
    var acc: array<vec4<f32>, PER_LANE>;
    let q_base = (b * p.q_batch_stride + row * p.q_stride + p.q_offset) / 4u + col4;
    for (var t = 0u; t < PER_LANE; t++) {
        let d = lane + LANES * t;
        if (d < D4) {
            q[t] = q_buf[q_base + d] * p.scale;
        }
        acc[t] = vec4<f32>(0.0);
    }
    // Keys this query sees (causal: j ≤ i + Lk − Lq), and the keys any query of the tile sees.
    let key_end = visible_keys(row);
    let tile_end = visible_keys(min(wid.x * ROWS + ROWS, p.lq) - 1u);
    let k_base = (b * p.k_batch_stride + p.k_offset) / 4u + col4;
    let v_base = (b * p.v_batch_stride + p.v_offset) / 4u + col4;
    let k_step = p.k_stride / 4u;
    let v_step = p.v_stride / 4u;

    var m = NEG;
    var l = 0.0;
    for (var key0 = 0u; key0 < tile_end; key0 += BC) {
        workgroupBarrier();
        // Stage BC keys and values (zeros past the end).
        for (var e = li; e < BC * D4; e += ROWS * LANES) {
            let j = e / D4;
            let d = e % D4;
            var kv = vec4<f32>(0.0);
            var vv = vec4<f32>(0.0);
            if (key0 + j < p.lk) {
                kv = k_buf[k_base + (key0 + j) * k_step + d];
                vv = v_buf[v_base + (key0 + j) * v_step + d];
            }
            k_tile[j * MAX_D4 + d] = kv;
            v_tile[j * MAX_D4 + d] = vv;
        }
        workgroupBarrier();
        // This lane's share of each key's score.
        for (var j = 0u; j < BC; j++) {
            var s = 0.0;
            for (var t = 0u; t < PER_LANE; t++) {
                let d = lane + LANES * t;
                if (d < D4) {
                    s += dot(q[t], k_tile[j * MAX_D4 + d]);
                }
            }
            partial[li * BC + j] = s;
        }
        workgroupBarrier();
        // Every lane of the row sums the four shares of all BC scores.
        var s: array<f32, BC>;
        var m_tile = NEG;
        for (var j = 0u; j < BC; j++) {
            let base = (r * LANES) * BC + j;
            var v = partial[base] + partial[base + BC] + partial[base + 2u * BC]
                + partial[base + 3u * BC];
            if (key0 + j >= key_end) {
                v = NEG;
            }
            s[j] = v;
            m_tile = max(m_tile, v);
        }
        let m_new = max(m, m_tile);
        let corr = exp(m - m_new);
        for (var t = 0u; t < PER_LANE; t++) {
            acc[t] *= corr;
        }
        l *= corr;
        for (var j = 0u; j < BC; j++) {
            var pj = 0.0;
            if (key0 + j < key_end) {
                pj = exp(s[j] - m_new);
            }
            l += pj;
            for (var t = 0u; t < PER_LANE; t++) {
                let d = lane + LANES * t;
                if (d < D4) {
                    acc[t] += pj * v_tile[j * MAX_D4 + d];
                }
            }
        }
        m = m_new;
    }

    if (qi < p.lq) {
        var inv = 0.0;
        if (l > 0.0) {
            inv = 1.0 / l;
        }
        let o_base = (b * p.o_batch_stride + qi * p.o_stride) / 4u + col4;
        for (var t = 0u; t < PER_LANE; t++) {
            let d = lane + LANES * t;
            if (d < D4) {
                o_buf[o_base + d] = acc[t] * inv;
            }
        }
    }
}
