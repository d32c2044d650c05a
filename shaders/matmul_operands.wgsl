// Declarations shared by the workgroup-tiled matmul kernels (matmul.wgsl, matmul_tile64.wgsl,
// matmul_coop16.wgsl), after matmul_io.wgsl: A's binding as scalars, the B layout override,
// and bounds-checked reads of A and op(B) (B comes from a weights_*.wgsl prelude).
//
//   C[b] = act(A[b] · op(B[b]) (+ bias)) (+ residual[b])
//   A: [M, K] f32, C and residual: [M, N] f32, bias: [N] f32
//   op(B) = B with B stored [K, N]          (TRANS_B = false)
//         = Bᵀ with B stored [N, K]         (TRANS_B = true: PyTorch Linear weights)
// A batch stride of 0 broadcasts that operand over the batch.

// Params, the other bindings and ACT: matmul_io.wgsl (prepended).
@group(0) @binding(1) var<storage, read> a_buf: array<f32>;

override TRANS_B: bool = true;

// A[m, k] of the batch entry at `base`; zero outside the matrix.
fn a_at(base: u32, m: u32, k: u32) -> f32 {
    if (m < p.m && k < p.k) {
        return a_buf[base + m * p.k + k];
    }
    return 0.0;
}

// op(B)[k, n] of the batch entry at `base` (B row n when transposed); zero when `valid` is
// false or outside K.
fn b_at(base: u32, n: u32, k: u32, valid: bool) -> f32 {
    if (!valid || k >= p.k) {
        return 0.0;
    }
    if (TRANS_B) {
        return load_b(base + n * p.k + k);
    }
    return load_b(base + k * p.n + n);
}
