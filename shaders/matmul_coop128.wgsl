// Batched matrix multiply on cooperative matrices (tensor cores) with tiles of 8×8 fragments:
// 128×128 with 16×16 fragments (NVIDIA, AMD), 64×64 with 8×8. What matmul_coop64.wgsl
// computes, with the same operands, layouts, gated units and epilogue (its header has them);
// FR, SG and the fragment aliases come from the cooperative-matrix prelude (shaders.rs
// CoopShape).
//
// Mapping: a workgroup of 8 subgroups (8·SG invocations: 256 for 16×16 fragments with 32-wide
// subgroups) owns a BM×BN tile of C, BM = BN = 8·FR; the subgroups stand 4 × 2, each owning
// 2FR rows × 4FR columns as 2×4 accumulators (2×4 more for the gates). Against Coop64's 2×2
// per subgroup on 64×64 tiles (with 16×16 fragments): 8 multiplies per 6 fragment loads from
// workgroup memory instead of 4 per 4, and half the staged elements per multiply-add. K is
// walked 32 at a time, the next slice read into registers (vec4 loads) while the tensor cores
// multiply the current one. Each accumulator leaves through its subgroup's own FR×FR of
// workgroup memory (the tile would not fit: 64 KB of f32), so the epilogue and the bounds
// checks run per element.

override TRANS_B: bool = true;
override GATED: bool = false;

// Params, the other bindings and ACT: matmul_io.wgsl (prepended); A's binding and the
// slices' staging (a_load, b_load, a_store, b_store, b_frag): matmul_coop_staging.wgsl
// (appended).

// The tile: BM × BN, 8 fragments square.
const BM: u32 = 8u * FR;
const BN: u32 = BM;
const BK: u32 = 32u;
const THREADS: u32 = 8u * SG;
// a_sh[m * SA + k]: the A slice, row-major, rows padded off the natural stride.
const SA: u32 = 40u;
// TRANS_B: b_sh[n * SB + k] (B's own layout; 2·BN rows when gated: values, then gates).
// Otherwise b_sh[k * SBN + n].
const SB: u32 = 40u;
const SBN: u32 = BN + 8u;
// Vec4s of an A slice (BM rows × 8) per invocation; B's (BN rows) are the same, twice when
// gated.
const SHARES: u32 = BM * 8u / THREADS;
// Elements of one FR×FR fragment per invocation of its subgroup.
const FRAG_SHARES: u32 = FR * FR / SG;

var<workgroup> a_sh: array<f16, BM * SA>;
var<workgroup> b_sh: array<f16, 2u * BN * SB>;  // ≥ BK × SBN
// One fragment per subgroup: values, then (gated) gates.
var<workgroup> c_sh: array<f32, 16u * FR * FR>;

// Writes the fragment at C rows row.., columns col.. that subgroup sg has just stored in its
// part of c_sh (its gates FR·FR·8 further on), through the epilogue: element lane + t·SG of
// the fragment for each t.
fn frag_out(sg: u32, lane: u32, row: u32, col: u32, c_base: u32) {
    for (var t = 0u; t < FRAG_SHARES; t++) {
        let e = lane + t * SG;
        let m = row + e / FR;
        let n = col + e % FR;
        if (m < p.m && n < p.n) {
            let idx = c_base + m * p.n + n;
            let v = c_sh[sg * FR * FR + e];
            if (GATED) {
                c_buf[idx] = epilogue_gated(idx, n, v, c_sh[(8u + sg) * FR * FR + e]);
            } else {
                c_buf[idx] = epilogue(idx, n, v);
            }
        }
    }
}

@compute @workgroup_size(THREADS, 1, 1)
fn matmul_coop128(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let row0 = wid.y * BM;
    let col0 = wid.x * BN;
    let a_base = wid.z * p.a_batch_stride;
    let b_base = wid.z * p.b_batch_stride;
    // This invocation's subgroup, its lane, and the 2FR × 4FR block of the tile it owns.
    let sg = li / SG;
    let lane = li % SG;
    let wr = 2u * FR * (sg / 2u);
    let wc = 4u * FR * (sg % 2u);
    var b_shares = SHARES;
    if (GATED) {
        b_shares = 2u * SHARES;
    }

    // Zero accumulators, loaded from zeroed workgroup memory.
    for (var i = li; i < 16u * FR * FR; i += THREADS) {
        c_sh[i] = 0.0;
    }
    workgroupBarrier();
    var c00 = coopLoadT<FragC>(&c_sh[0], FR);
    var c01 = c00;
    var c02 = c00;
    var c03 = c00;
    var c10 = c00;
    var c11 = c00;
    var c12 = c00;
    var c13 = c00;
    var g00 = c00;
    var g01 = c00;
    var g02 = c00;
    var g03 = c00;
    var g10 = c00;
    var g11 = c00;
    var g12 = c00;
    var g13 = c00;

    var ra: array<vec4<f32>, SHARES>;
    var rb: array<vec4<f32>, 2u * SHARES>;
    for (var i = 0u; i < SHARES; i++) {
        ra[i] = a_load(a_base, row0, 0u, li + i * THREADS);
    }
    for (var i = 0u; i < b_shares; i++) {
        rb[i] = b_load(b_base, col0, 0u, li + i * THREADS);
    }

    for (var k0 = 0u; k0 < p.k; k0 += BK) {
        for (var i = 0u; i < SHARES; i++) {
            a_store(li + i * THREADS, ra[i]);
        }
        for (var i = 0u; i < b_shares; i++) {
            b_store(li + i * THREADS, rb[i]);
        }
        workgroupBarrier();
        // The next slice's loads are in flight while this one is multiplied.
        let k1 = k0 + BK;
        if (k1 < p.k) {
            for (var i = 0u; i < SHARES; i++) {
                ra[i] = a_load(a_base, row0, k1, li + i * THREADS);
            }
            for (var i = 0u; i < b_shares; i++) {
                rb[i] = b_load(b_base, col0, k1, li + i * THREADS);
            }
        }
        for (var kk = 0u; kk < BK / FR; kk++) {
            let a0 = coopLoadT<FragA>(&a_sh[wr * SA + FR * kk], SA);
            let a1 = coopLoadT<FragA>(&a_sh[(wr + FR) * SA + FR * kk], SA);
            let j = wc / FR;
            let b0 = b_frag(j, kk, false);
            let b1 = b_frag(j + 1u, kk, false);
            let b2 = b_frag(j + 2u, kk, false);
            let b3 = b_frag(j + 3u, kk, false);
            c00 = coopMultiplyAdd(a0, b0, c00);
            c01 = coopMultiplyAdd(a0, b1, c01);
            c02 = coopMultiplyAdd(a0, b2, c02);
            c03 = coopMultiplyAdd(a0, b3, c03);
            c10 = coopMultiplyAdd(a1, b0, c10);
            c11 = coopMultiplyAdd(a1, b1, c11);
            c12 = coopMultiplyAdd(a1, b2, c12);
            c13 = coopMultiplyAdd(a1, b3, c13);
            if (GATED) {
                let h0 = b_frag(j, kk, true);
                let h1 = b_frag(j + 1u, kk, true);
                let h2 = b_frag(j + 2u, kk, true);
                let h3 = b_frag(j + 3u, kk, true);
                g00 = coopMultiplyAdd(a0, h0, g00);
                g01 = coopMultiplyAdd(a0, h1, g01);
                g02 = coopMultiplyAdd(a0, h2, g02);
                g03 = coopMultiplyAdd(a0, h3, g03);
                g10 = coopMultiplyAdd(a1, h0, g10);
                g11 = coopMultiplyAdd(a1, h1, g11);
                g12 = coopMultiplyAdd(a1, h2, g12);
                g13 = coopMultiplyAdd(a1, h3, g13);
            }
        }
        workgroupBarrier();
    }

    // Each accumulator (and its gates) out through this subgroup's part of c_sh; the barriers
    // are reached by every invocation (uniform control flow).
    let c_base = wid.z * p.c_batch_stride;
    let own = sg * FR * FR;
    let gates = (8u + sg) * FR * FR;
    let r0 = row0 + wr;
    let r1 = r0 + FR;
    let cc = col0 + wc;
    coopStoreT(c00, &c_sh[own], FR);
    if (GATED) { coopStoreT(g00, &c_sh[gates], FR); }
    workgroupBarrier();
    frag_out(sg, lane, r0, cc, c_base);
    workgroupBarrier();
    coopStoreT(c01, &c_sh[own], FR);
    if (GATED) { coopStoreT(g01, &c_sh[gates], FR); }
    workgroupBarrier();
    frag_out(sg, lane, r0, cc + FR, c_base);
    workgroupBarrier();
    coopStoreT(c02, &c_sh[own], FR);
    if (GATED) { coopStoreT(g02, &c_sh[gates], FR); }
    workgroupBarrier();
    frag_out(sg, lane, r0, cc + 2u * FR, c_base);
    workgroupBarrier();
    coopStoreT(c03, &c_sh[own], FR);
    if (GATED) { coopStoreT(g03, &c_sh[gates], FR); }
    workgroupBarrier();
    frag_out(sg, lane, r0, cc + 3u * FR, c_base);
    workgroupBarrier();
    coopStoreT(c10, &c_sh[own], FR);
    if (GATED) { coopStoreT(g10, &c_sh[gates], FR); }
    workgroupBarrier();
    frag_out(sg, lane, r1, cc, c_base);
    workgroupBarrier();
    coopStoreT(c11, &c_sh[own], FR);
    if (GATED) { coopStoreT(g11, &c_sh[gates], FR); }
    workgroupBarrier();
    frag_out(sg, lane, r1, cc + FR, c_base);
    workgroupBarrier();
    coopStoreT(c12, &c_sh[own], FR);
    if (GATED) { coopStoreT(g12, &c_sh[gates], FR); }
    workgroupBarrier();
    frag_out(sg, lane, r1, cc + 2u * FR, c_base);
    workgroupBarrier();
    coopStoreT(c13, &c_sh[own], FR);
    if (GATED) { coopStoreT(g13, &c_sh[gates], FR); }
    workgroupBarrier();
    frag_out(sg, lane, r1, cc + 3u * FR, c_base);
}
