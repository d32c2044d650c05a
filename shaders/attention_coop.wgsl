// Flash attention on cooperative matrices (tensor cores): the same operation and Params as
// attention.wgsl, with both products — the scores Q·Kᵀ and the output P·V — multiplied as
// f16 × f16 → f32 fragments. FR (fragment size), SG (subgroup width) and the FragA / FragB /
// FragC aliases come from the cooperative-matrix prelude (shaders.rs CoopShape); DMAX (the
// largest head size of this variant: 64 or 128) and BQ (queries per workgroup: 32 or 16, so
// that the tiles fit 32 KiB of workgroup memory) are prepended with it.
//
// Mapping: workgroup (x, h, b) owns BQ queries of head h in batch b and walks the keys BKV at
// a time with an online softmax (running max and denominator per query, output rescaled per
// block). Per block:
//   1. every invocation stages its share of the block's keys and values (f32 → f16);
//   2. the subgroups multiply S = Q·Kᵀ, one FR×FR fragment of S each (Q staged once, f16);
//   3. TPR invocations per query read the query's BKV scores (f32, scaled), take the block max,
//      and write their KPT probabilities as f16 P; each keeps its own share of the denominator;
//   4. the subgroups multiply P·V, fragments of the BQ×D block output, into workgroup memory;
//   5. each invocation rescales its vec4 columns of the query's output (in registers) and adds
//      the block's.
// The dispatch covers batch × heads × query tiles: [2, 16, 256] queries give 256 workgroups.
//
// Needs head_dim a multiple of FR (and of 4) and ≤ DMAX, every stride and offset a multiple
// of 4. D = head_dim is an override constant. Scores and the softmax stay f32; Q, K, V and P
// are rounded to f16 (as PyTorch's fp16 attention does).

// p, q_buf, k_buf, v_buf, o_buf, visible_keys: attention_vec4_io.wgsl (prepended); Params:
// ops::attention::Params (appended).

// head_dim: a multiple of FR, at most DMAX.
override D: u32 = 64u;

const BKV: u32 = 32u;
const THREADS: u32 = 128u;
const NSG: u32 = THREADS / SG;
// Invocations per query row, keys each of them turns into probabilities, and the most vec4
// output columns each holds.
const TPR: u32 = THREADS / BQ;
const KPT: u32 = BKV / TPR;
const OPT4: u32 = DMAX / 4u / TPR;
// Row strides (f16) of the Q, K, V and P tiles: padded by 16 bytes against bank conflicts.
const DS: u32 = DMAX + 8u;
const PS: u32 = BKV + 8u;
const NEG: f32 = -3.0e38;

var<workgroup> q_sh: array<f16, BQ * DS>;
var<workgroup> k_sh: array<f16, BKV * DS>;
var<workgroup> v_sh: array<f16, BKV * DS>;
var<workgroup> p_sh: array<f16, BQ * PS>;
// The block's scores [BQ, BKV] (row stride BKV), then its output [BQ, D] (row stride D), then
// the denominators' shares.
var<workgroup> x_sh: array<f32, BQ * DMAX>;
// Zeros: the accumulators' starting value.
var<workgroup> z_sh: array<f32, FR * FR>;

// Writes the 4 values of v as f16 at tile[at..at + 4] (q_sh, k_sh or v_sh by `which`).
fn put4(which: u32, at: u32, v: vec4<f32>) {
    let h = vec4<f16>(v);
    if (which == 0u) {
        q_sh[at] = h.x;
        q_sh[at + 1u] = h.y;
        q_sh[at + 2u] = h.z;
        q_sh[at + 3u] = h.w;
    } else if (which == 1u) {
        k_sh[at] = h.x;
        k_sh[at + 1u] = h.y;
        k_sh[at + 2u] = h.z;
        k_sh[at + 3u] = h.w;
    } else {
        v_sh[at] = h.x;
        v_sh[at + 1u] = h.y;
        v_sh[at + 2u] = h.z;
        v_sh[at + 3u] = h.w;
    }
}

@compute @workgroup_size(128, 1, 1)
fn attention_coop(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let h = wid.y;
    let b = wid.z;
    let q0 = wid.x * BQ;
    let d4 = D / 4u;
    let col4 = h * p.head_dim / 4u;
    let sg = li / SG;
    let r = li / TPR;
    let lane = li % TPR;
    let qi = q0 + r;

    // Zeros for the accumulators, and this tile's queries as f16 (zero past the end).
    for (var e = li; e < FR * FR; e += THREADS) {
        z_sh[e] = 0.0;
    }
    let q_base = (b * p.q_batch_stride + p.q_offset) / 4u + col4;
    let q_step = p.q_stride / 4u;
    for (var e = li; e < BQ * d4; e += THREADS) {
        let row = e / d4;
        let c = e % d4;
        var v = vec4<f32>(0.0);
        if (q0 + row < p.lq) {
            v = q_buf[q_base + (q0 + row) * q_step + c];
        }
        put4(0u, row * DS + 4u * c, v);
    }
    workgroupBarrier();
    let zero = coopLoadT<FragC>(&z_sh[0], FR);

    // Keys this query sees (causal: j ≤ i + Lk − Lq), and the keys any query of the tile sees.
    let key_end = visible_keys(qi);
    let tile_end = visible_keys(min(q0 + BQ, p.lq) - 1u);
    let k_base = (b * p.k_batch_stride + p.k_offset) / 4u + col4;
    let v_base = (b * p.v_batch_stride + p.v_offset) / 4u + col4;
    let k_step = p.k_stride / 4u;
    let v_step = p.v_stride / 4u;

    var m = NEG;
    var l = 0.0;
    var acc: array<vec4<f32>, OPT4>;
    for (var t = 0u; t < OPT4; t++) {
        acc[t] = vec4<f32>(0.0);
    }
    let s_frags_n = BKV / FR;
    let s_frags = (BQ / FR) * s_frags_n;
    let o_frags_n = D / FR;
    let o_frags = (BQ / FR) * o_frags_n;

    for (var key0 = 0u; key0 < tile_end; key0 += BKV) {
        // 1. The block's keys and values (zeros past the end).
        for (var e = li; e < BKV * d4; e += THREADS) {
            let j = e / d4;
            let c = e % d4;
            var kv = vec4<f32>(0.0);
            var vv = vec4<f32>(0.0);
            if (key0 + j < p.lk) {
                kv = k_buf[k_base + (key0 + j) * k_step + c];
                vv = v_buf[v_base + (key0 + j) * v_step + c];
            }
            put4(1u, j * DS + 4u * c, kv);
            put4(2u, j * DS + 4u * c, vv);
        }
        workgroupBarrier();

        // 2. S = Q·Kᵀ: fragment f of S per subgroup (Kᵀ read column-major from K's rows).
        for (var f = sg; f < s_frags; f += NSG) {
            let fi = f / s_frags_n;
            let fj = f % s_frags_n;
            var s = zero;
            for (var kk = 0u; kk < D / FR; kk++) {
                let a = coopLoadT<FragA>(&q_sh[fi * FR * DS + kk * FR], DS);
                let bt = coopLoad<FragB>(&k_sh[fj * FR * DS + kk * FR], DS);
                s = coopMultiplyAdd(a, bt, s);
            }
            coopStoreT(s, &x_sh[fi * FR * BKV + fj * FR], BKV);
        }
        workgroupBarrier();

        // 3. Online softmax: the block max over the query's visible keys, this invocation's
        // KPT probabilities as f16, its share of the denominator.
        var m_blk = NEG;
        for (var j = 0u; j < BKV; j++) {
            if (key0 + j < key_end) {
                m_blk = max(m_blk, x_sh[r * BKV + j] * p.scale);
            }
        }
        let m_new = max(m, m_blk);
        let corr = exp(m - m_new);
        var l_blk = 0.0;
        for (var i = 0u; i < KPT; i++) {
            let j = lane * KPT + i;
            var pj = 0.0;
            if (key0 + j < key_end) {
                pj = exp(x_sh[r * BKV + j] * p.scale - m_new);
            }
            l_blk += pj;
            p_sh[r * PS + j] = f16(pj);
        }
        l = l * corr + l_blk;
        m = m_new;
        workgroupBarrier();

        // 4. The block's output P·V, fragment by fragment, into x_sh.
        for (var f = sg; f < o_frags; f += NSG) {
            let fi = f / o_frags_n;
            let fj = f % o_frags_n;
            var o = zero;
            for (var kk = 0u; kk < BKV / FR; kk++) {
                let a = coopLoadT<FragA>(&p_sh[fi * FR * PS + kk * FR], PS);
                let bv = coopLoadT<FragB>(&v_sh[kk * FR * DS + fj * FR], DS);
                o = coopMultiplyAdd(a, bv, o);
            }
            coopStoreT(o, &x_sh[fi * FR * D + fj * FR], D);
        }
        workgroupBarrier();

        // 5. Rescale this invocation's columns of the query's output and add the block's.
        for (var t = 0u; t < OPT4; t++) {
            let c = lane + TPR * t;
            if (c < d4) {
                let at = r * D + 4u * c;
                acc[t] = acc[t] * corr
                    + vec4<f32>(x_sh[at], x_sh[at + 1u], x_sh[at + 2u], x_sh[at + 3u]);
            }
        }
        workgroupBarrier();
    }

    // The denominator: the sum of the query's TPR shares.
    x_sh[li] = l;
    workgroupBarrier();
    var l_sum = 0.0;
    for (var i = 0u; i < TPR; i++) {
        l_sum += x_sh[r * TPR + i];
    }
    if (qi < p.lq) {
        var inv = 0.0;
        if (l_sum > 0.0) {
            inv = 1.0 / l_sum;
        }
        let o_base = (b * p.o_batch_stride + qi * p.o_stride) / 4u + col4;
        for (var t = 0u; t < OPT4; t++) {
            let c = lane + TPR * t;
            if (c < d4) {
                o_buf[o_base + c] = acc[t] * inv;
            }
        }
    }
}
