// Batched matrix multiply on cooperative matrices (tensor cores): f16 × f16 → f32 fragments of
// FR×FR×FR, for adapters with `EXPERIMENTAL_COOPERATIVE_MATRIX` that offer that configuration
// with subgroups of exactly SG invocations (FR, SG and the FragA/FragB/FragC aliases come from
// the cooperative-matrix prelude, shaders.rs CoopShape: 16 and 32 on NVIDIA, 8 and 8 on
// lavapipe).
//
//   C[b] = act(A[b] · op(B[b]) (+ bias)) (+ residual[b])
//   A: [M, K] f32 (rounded to f16 on the way in), C and residual: [M, N] f32, bias: [N] f32
//   op(B) = B with B stored [K, N]          (TRANS_B = false)
//         = Bᵀ with B stored [N, K]         (TRANS_B = true: PyTorch Linear weights)
//
// Declarations and operand reads come from matmul_operands.wgsl, B from a weights_*.wgsl
// prelude; f32 weights are rounded to f16 too.
//
// Mapping: a workgroup is one subgroup of SG invocations and owns a 2FR×2FR tile of C as four
// FR×FR f32 accumulators. K is walked in steps of FR: the invocations stage A's 2FR×FR and B's
// FR×2FR slices in workgroup memory as f16 (zero outside the matrix, so any M, N, K work),
// load two A and two B matrices from there and do four multiply-adds. At the end the
// accumulators go through workgroup memory so that the epilogue (bias, activation, residual)
// and the bounds checks run per element, as in the other matmul kernels.

const TM: u32 = 2u * FR;
const TN: u32 = 2u * FR;
const TK: u32 = FR;
const THREADS: u32 = SG;

// a_sh[m * TK + k], b_sh[k * TN + n], c_sh[m * TN + n]: row-major.
var<workgroup> a_sh: array<f16, TM * TK>;
var<workgroup> b_sh: array<f16, TK * TN>;
var<workgroup> c_sh: array<f32, TM * TN>;

@compute @workgroup_size(SG, 1, 1)
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
    var c00 = coopLoadT<FragC>(&c_sh[0], TN);
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
        let a0 = coopLoadT<FragA>(&a_sh[0], TK);
        let a1 = coopLoadT<FragA>(&a_sh[FR * TK], TK);
        let b0 = coopLoadT<FragB>(&b_sh[0], TN);
        let b1 = coopLoadT<FragB>(&b_sh[FR], TN);
        c00 = coopMultiplyAdd(a0, b0, c00);
        c01 = coopMultiplyAdd(a0, b1, c01);
        c10 = coopMultiplyAdd(a1, b0, c10);
        c11 = coopMultiplyAdd(a1, b1, c11);
        workgroupBarrier();
    }

    coopStoreT(c00, &c_sh[0], TN);
    coopStoreT(c01, &c_sh[FR], TN);
    coopStoreT(c10, &c_sh[FR * TN], TN);
    coopStoreT(c11, &c_sh[FR * TN + FR], TN);
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
