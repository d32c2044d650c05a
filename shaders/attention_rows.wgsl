// Fused multi-head attention for adapters that run on the CPU (lavapipe/llvmpipe, WARP,
// SwiftShader): the same operation and Params as attention.wgsl, without workgroup memory.
//
// Thread mapping: workgroup (x, h, b) handles 16 queries of head h in batch b, one query per
// invocation. Every invocation walks the same keys, so the K and V rows it loads are the same
// across the lanes a CPU runs together; its query, output row, running max and denominator
// stay in registers: the head size is an override constant (D4 = head_dim / 4), so every loop
// over it has a fixed trip count the compiler unrolls. Keys go four at a time (one rescale of
// the output per four keys).
//
// Needs head_dim % 4 == 0, head_dim ≤ 128, and every stride and offset a multiple of 4 (Q, K, V
// and O are read and written as vec4).

// p, q_buf, k_buf, v_buf, o_buf, visible_keys: attention_vec4_io.wgsl (prepended); Params:
// ops::attention::Params (appended).

// head_dim / 4.
override D4: u32 = 16u;
const MAX_D4: u32 = 32u;
const NEG: f32 = -3.0e38;

@compute @workgroup_size(16, 1, 1)
fn attention_rows(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let h = wid.y;
    let b = wid.z;
    let qi = wid.x * 16u + lid.x;
    let row = min(qi, p.lq - 1u);
    let col = h * p.head_dim;

    var q: array<vec4<f32>, MAX_D4>;
    var acc: array<vec4<f32>, MAX_D4>;
    let q_base = (b * p.q_batch_stride + row * p.q_stride + p.q_offset + col) / 4u;
    for (var j = 0u; j < D4; j++) {
        q[j] = q_buf[q_base + j] * p.scale;
        acc[j] = vec4<f32>(0.0);
    }
    let key_end = visible_keys(row);
    let k_base = (b * p.k_batch_stride + p.k_offset + col) / 4u;
    let v_base = (b * p.v_batch_stride + p.v_offset + col) / 4u;
    let k_step = p.k_stride / 4u;
    let v_step = p.v_stride / 4u;
    let last = max(key_end, 1u) - 1u;

    var m = NEG;
    var l = 0.0;
    for (var key = 0u; key < key_end; key += 4u) {
        // Keys past the end are clamped to the last one and given zero weight.
        let k0 = k_base + key * k_step;
        let k1 = k_base + min(key + 1u, last) * k_step;
        let k2 = k_base + min(key + 2u, last) * k_step;
        let k3 = k_base + min(key + 3u, last) * k_step;
        var s = vec4<f32>(0.0);
        for (var j = 0u; j < D4; j++) {
            let qj = q[j];
            s += vec4<f32>(
                dot(qj, k_buf[k0 + j]),
                dot(qj, k_buf[k1 + j]),
                dot(qj, k_buf[k2 + j]),
                dot(qj, k_buf[k3 + j]),
            );
        }
        let live = vec4<u32>(key) + vec4<u32>(0u, 1u, 2u, 3u) < vec4<u32>(key_end);
        s = select(vec4<f32>(NEG), s, live);
        let m_new = max(m, max(max(s.x, s.y), max(s.z, s.w)));
        let corr = exp(m - m_new);
        let pr = select(vec4<f32>(0.0), exp(s - vec4<f32>(m_new)), live);
        l = l * corr + pr.x + pr.y + pr.z + pr.w;
        m = m_new;
        let v0 = v_base + key * v_step;
        let v1 = v_base + min(key + 1u, last) * v_step;
        let v2 = v_base + min(key + 2u, last) * v_step;
        let v3 = v_base + min(key + 3u, last) * v_step;
        for (var j = 0u; j < D4; j++) {
            acc[j] = acc[j] * corr + pr.x * v_buf[v0 + j] + pr.y * v_buf[v1 + j]
                + pr.z * v_buf[v2 + j] + pr.w * v_buf[v3 + j];
        }
    }

    if (qi < p.lq) {
        var inv = 0.0;
        if (l > 0.0) {
            inv = 1.0 / l;
        }
        let o_base = (b * p.o_batch_stride + qi * p.o_stride + col) / 4u;
        for (var j = 0u; j < D4; j++) {
            o_buf[o_base + j] = acc[j] * inv;
        }
    }
}
