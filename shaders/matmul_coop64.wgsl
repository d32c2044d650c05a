// Batched matrix multiply on cooperative matrices (tensor cores) with 64×64 workgroup tiles:
// f16 × f16 → f32 products of FR×FR×FR, for adapters with `EXPERIMENTAL_COOPERATIVE_MATRIX`
// that offer that configuration with subgroups of exactly SG invocations (FR, SG, WG and the
// FragA/FragB/FragC aliases come from the cooperative-matrix prelude, shaders.rs CoopShape:
// FR 16 with SG 32 on NVIDIA, 8 with 32 on Apple GPUs, 8 with 8 on lavapipe).
//
//   C[b] = act(A[b] · op(B[b]) (+ bias)) (+ residual[b])
//   A: [M, K] f32 (rounded to f16 on the way in), C and residual: [M, N] f32, bias: [N] f32
//   op(B) = Bᵀ with B stored [N, K]         (TRANS_B = true: PyTorch Linear weights)
//         = B with B stored [K, N]          (TRANS_B = false; N a multiple of 4)
// K is a multiple of 4: A and B are read as vec4s. B comes from a weights4_*.wgsl prelude
// (`load_b4(i) -> vec4<f32>`, i counting vec4s); f32 weights are rounded to f16 too. Batch
// strides are in scalars; a B batch stride of 0 shares B over the batch.
//
// Gated linear units (GATED, TRANS_B only): B holds 2N rows, values then gates, and
// C[m, n] = (v + bias[n]) · act(g + bias[N + n]) (+ residual), v and g the products with B rows
// n and N + n.
//
// Mapping: a workgroup of WG invocations, (64 / 2FR)² subgroups of SG (WG is 128, 256 or 512),
// owns a 64×64 tile of C; each subgroup owns a 2FR×2FR block as 2×2 accumulators of FR×FR (and
// 2×2 more for the gates). K
// is walked 32 at a time: each invocation reads its share of the next A and B slices into
// registers (vec4 loads) while the tensor cores work on the current one in workgroup memory,
// so global loads overlap the multiplies. Rows of the workgroup-memory tiles are padded to a
// multiple of 16 bytes off the natural stride, against bank conflicts. At the end the
// accumulators go through workgroup memory so that the epilogue and the bounds checks run
// per element, with coalesced stores.
//
// Sliced K (KSPLIT = 2, where 2·WG ≤ 512): twice the invocations (two groups of WG) for the
// same 64×64 tile; each group multiplies every other FR-deep step of each K slice into its own
// accumulators, and the two groups' sums are added on the way out through workgroup memory.
// Twice the subgroups per tile, the same loads per tile: for products whose 64×64 tiles are
// too few to keep a GPU's tensor cores busy (the text encoder's 154 rows, batch-1 images).

override TRANS_B: bool = true;
override GATED: bool = false;
override KSPLIT: u32 = 1u;

// Params, the other bindings and ACT: matmul_io.wgsl (prepended); A's binding and the
// slices' staging (a_load, b_load, a_store, b_store, b_frag): matmul_coop_staging.wgsl
// (appended).

const BM: u32 = 64u;
const BN: u32 = 64u;
const BK: u32 = 32u;
// a_sh[m * SA + k]: the A slice, row-major.
const SA: u32 = 40u;
// TRANS_B: b_sh[n * SB + k] (B's own layout; 128 rows when gated: values, then gates).
// Otherwise b_sh[k * SBN + n].
const SB: u32 = 40u;
const SBN: u32 = 72u;

var<workgroup> a_sh: array<f16, 2560>;  // 64 × SA
var<workgroup> b_sh: array<f16, 5120>;  // 128 × SB (≥ 32 × SBN)
var<workgroup> c_sh: array<f32, 4096>;  // 64 × 64

@compute @workgroup_size(WG * KSPLIT, 1, 1)
fn matmul_coop64(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let threads = WG * KSPLIT;
    let row0 = wid.y * BM;
    let col0 = wid.x * BN;
    let a_base = wid.z * p.a_batch_stride;
    let b_base = wid.z * p.b_batch_stride;
    // This invocation's subgroup, its K group (sliced K) and the 2FR×2FR block of the tile it
    // owns.
    let sg = li / SG;
    let group = sg / (WG / SG);
    let sgl = sg % (WG / SG);
    let per_row = BN / (2u * FR);
    let wr = 2u * FR * (sgl / per_row);
    let wc = 2u * FR * (sgl % per_row);
    // Vec4s per slice and invocation (threads is 128 to 512): A 64 × 8; B 64 rows × 8
    // (TRANS_B), 128 × 8 gated, 32 × 16 otherwise.
    let a_shares = 512u / threads;
    var b_shares = 512u / threads;
    if (GATED) {
        b_shares = 1024u / threads;
    }
    // Tile elements per invocation.
    let per_inv = 4096u / threads;

    // Zero accumulators, loaded from zeroed workgroup memory.
    for (var i = 0u; i < per_inv; i++) {
        c_sh[li + i * threads] = 0.0;
    }
    workgroupBarrier();
    var c00 = coopLoadT<FragC>(&c_sh[0], BN);
    var c01 = c00;
    var c10 = c00;
    var c11 = c00;
    var g00 = c00;
    var g01 = c00;
    var g10 = c00;
    var g11 = c00;

    var ra: array<vec4<f32>, 4>;
    var rb: array<vec4<f32>, 8>;
    for (var i = 0u; i < a_shares; i++) {
        ra[i] = a_load(a_base, row0, 0u, li + i * threads);
    }
    for (var i = 0u; i < b_shares; i++) {
        rb[i] = b_load(b_base, col0, 0u, li + i * threads);
    }

    for (var k0 = 0u; k0 < p.k; k0 += BK) {
        for (var i = 0u; i < a_shares; i++) {
            a_store(li + i * threads, ra[i]);
        }
        for (var i = 0u; i < b_shares; i++) {
            b_store(li + i * threads, rb[i]);
        }
        workgroupBarrier();
        // The next slice's loads are in flight while this one is multiplied.
        let k1 = k0 + BK;
        if (k1 < p.k) {
            for (var i = 0u; i < a_shares; i++) {
                ra[i] = a_load(a_base, row0, k1, li + i * threads);
            }
            for (var i = 0u; i < b_shares; i++) {
                rb[i] = b_load(b_base, col0, k1, li + i * threads);
            }
        }
        for (var kk = group; kk < BK / FR; kk += KSPLIT) {
            let a0 = coopLoadT<FragA>(&a_sh[wr * SA + FR * kk], SA);
            let a1 = coopLoadT<FragA>(&a_sh[(wr + FR) * SA + FR * kk], SA);
            let b0 = b_frag(wc / FR, kk, false);
            let b1 = b_frag(wc / FR + 1u, kk, false);
            c00 = coopMultiplyAdd(a0, b0, c00);
            c01 = coopMultiplyAdd(a0, b1, c01);
            c10 = coopMultiplyAdd(a1, b0, c10);
            c11 = coopMultiplyAdd(a1, b1, c11);
            if (GATED) {
                let h0 = b_frag(wc / FR, kk, true);
                let h1 = b_frag(wc / FR + 1u, kk, true);
                g00 = coopMultiplyAdd(a0, h0, g00);
                g01 = coopMultiplyAdd(a0, h1, g01);
                g10 = coopMultiplyAdd(a1, h0, g10);
                g11 = coopMultiplyAdd(a1, h1, g11);
            }
        }
        workgroupBarrier();
    }

    // Each invocation's per_inv elements of the tile (element li + i · threads), summed over
    // the K groups through workgroup memory; then the gates the same way.
    var values: array<f32, 32>;
    var gates: array<f32, 32>;
    for (var i = 0u; i < per_inv; i++) {
        values[i] = 0.0;
        gates[i] = 0.0;
    }
    for (var gi = 0u; gi < KSPLIT; gi++) {
        if (group == gi) {
            coopStoreT(c00, &c_sh[wr * BN + wc], BN);
            coopStoreT(c01, &c_sh[wr * BN + wc + FR], BN);
            coopStoreT(c10, &c_sh[(wr + FR) * BN + wc], BN);
            coopStoreT(c11, &c_sh[(wr + FR) * BN + wc + FR], BN);
        }
        workgroupBarrier();
        for (var i = 0u; i < per_inv; i++) {
            values[i] += c_sh[li + i * threads];
        }
        workgroupBarrier();
    }
    if (GATED) {
        for (var gi = 0u; gi < KSPLIT; gi++) {
            if (group == gi) {
                coopStoreT(g00, &c_sh[wr * BN + wc], BN);
                coopStoreT(g01, &c_sh[wr * BN + wc + FR], BN);
                coopStoreT(g10, &c_sh[(wr + FR) * BN + wc], BN);
                coopStoreT(g11, &c_sh[(wr + FR) * BN + wc + FR], BN);
            }
            workgroupBarrier();
            for (var i = 0u; i < per_inv; i++) {
                gates[i] += c_sh[li + i * threads];
            }
            workgroupBarrier();
        }
    }

    let c_base = wid.z * p.c_batch_stride;
    for (var i = 0u; i < per_inv; i++) {
        let e = li + i * threads;
        let m = row0 + e / BN;
        let n = col0 + e % BN;
        if (m < p.m && n < p.n) {
            let idx = c_base + m * p.n + n;
            if (GATED) {
                c_buf[idx] = epilogue_gated(idx, n, values[i], gates[i]);
            } else {
                c_buf[idx] = epilogue(idx, n, values[i]);
            }
        }
    }
}
