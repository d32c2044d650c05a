// Batched matrix multiply on cooperative matrices (tensor cores): f16 × f16 → f32 tiles of
// 16×16×16, for adapters with `EXPERIMENTAL_COOPERATIVE_MATRIX` that offer that configuration
// and run subgroups of exactly 32 invocations (NVIDIA). The engine picks it only there.
//
//   C[b] = act(A[b] · op(B[b]) (+ bias)) (+ residual[b])
//   A: [M, K] f32 (rounded to f16 on the way in), C and residual: [M, N] f32, bias: [N] f32
//   op(B) = B with B stored [K, N]          (TRANS_B = false)
//         = Bᵀ with B stored [N, K]         (TRANS_B = true: PyTorch Linear weights)
//
// Declarations and operand reads come from matmul_params.wgsl, B from a weights_*.wgsl
// prelude; f32 weights are rounded to f16 too.
//
// Mapping: a workgroup is one subgroup of 32 invocations and owns a 32×32 tile of C as four
// 16×16 f32 accumulators. K is walked in steps of 16: the invocations stage A's 32×16 and B's
// 16×32 slices in workgroup memory as f16 (zero outside the matrix, so any M, N, K work),
// load two A and two B matrices from there and do four multiply-adds. At the end the
// accumulators go through workgroup memory so that the epilogue (bias, activation, residual)
// and the bounds checks run per element, as in the other matmul kernels.

const TM: u32 = 32u;
const TN: u32 = 32u;
const TK: u32 = 16u;
const THREADS: u32 = 32u;

// a_sh[m * TK + k], b_sh[k * TN + n], c_sh[m * TN + n]: row-major.
var<workgroup> a_sh: array<f16, 512>;
var<workgroup> b_sh: array<f16, 512>;
var<workgroup> c_sh: array<f32, 1024>;

@compute @workgroup_size(32, 1, 1)
fn matmul_coop16(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let row0 = wid.y * TM;
    let col0 = wid.x * TN;
    let a_base = wid.z * p.a_batch_stride;
    let b_base = wid.z * p.b_batch_stride;

    // Zero accumulators, loaded from zeroed workgroup memory.
    for (var i = 0u; i < (TM * TN) / THREADS; i++) {
        c_sh[li + i * THREADS] = 0.0;
    }
    workgroupBarrier();
    var c00 = coopLoadT<coop_mat16x16<f32, C>>(&c_sh[0], TN);
    var c01 = c00;
    var c10 = c00;
    var c11 = c00;

    for (var k0 = 0u; k0 < p.k; k0 += TK) {
        for (var i = 0u; i < (TM * TK) / THREADS; i++) {
            let e = li + i * THREADS;
            let ml = e / TK;
            let kl = e % TK;
            a_sh[ml * TK + kl] = f16(a_at(a_base, row0 + ml, k0 + kl));
        }
        for (var i = 0u; i < (TN * TK) / THREADS; i++) {
            let e = li + i * THREADS;
            var kl: u32;
            var nl: u32;
            if (TRANS_B) {
                nl = e / TK;
                kl = e % TK;
            } else {
                kl = e / TN;
                nl = e % TN;
            }
            let n = col0 + nl;
            b_sh[kl * TN + nl] = f16(b_at(b_base, n, k0 + kl, n < p.n));
        }
        workgroupBarrier();
        let a0 = coopLoadT<coop_mat16x16<f16, A>>(&a_sh[0], TK);
        let a1 = coopLoadT<coop_mat16x16<f16, A>>(&a_sh[16u * TK], TK);
        let b0 = coopLoadT<coop_mat16x16<f16, B>>(&b_sh[0], TN);
        let b1 = coopLoadT<coop_mat16x16<f16, B>>(&b_sh[16], TN);
        c00 = coopMultiplyAdd(a0, b0, c00);
        c01 = coopMultiplyAdd(a0, b1, c01);
        c10 = coopMultiplyAdd(a1, b0, c10);
        c11 = coopMultiplyAdd(a1, b1, c11);
        workgroupBarrier();
    }

    coopStoreT(c00, &c_sh[0], TN);
    coopStoreT(c01, &c_sh[16], TN);
    coopStoreT(c10, &c_sh[16u * TN], TN);
    coopStoreT(c11, &c_sh[16u * TN + 16u], TN);
    workgroupBarrier();

    let c_base = wid.z * p.c_batch_stride;
    for (var i = 0u; i < (TM * TN) / THREADS; i++) {
        let e = li + i * THREADS;
        let m = row0 + e / TN;
        let n = col0 + e % TN;
        if (m < p.m && n < p.n) {
            let idx = c_base + m * p.n + n;
            c_buf[idx] = epilogue(idx, n, c_sh[e]);
        }
    }
}
