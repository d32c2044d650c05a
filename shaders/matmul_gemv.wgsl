// Matrix multiply for few rows (M ≤ 8: pooled text through adaptive-norm projections, batch-1
// products): memory-bound on B, so the work is spread over B's rows and along K instead of
// tiling C.
//
//   C[b] = act(A[b] · B[b]ᵀ (+ bias)) (+ residual[b])
//   A: [M, K] f32, B: [N, K] (PyTorch Linear layout), C and residual: [M, N]
//
// Needs K % 4 == 0 and M ≤ 8: A and B are read as vec4 along K. B comes from a prelude
// (weights4_*.wgsl) that declares binding 2 and `load_b4(i) -> vec4<f32>` (i counts vec4s).
// Batch strides are in scalars; a B batch stride of 0 shares B over the batch.
//
// Thread mapping: a workgroup of 256 invocations owns 32 columns of C (32 rows of B); eight
// neighbouring invocations share a column and split K (lane l takes the vec4s l, l + 8, …, so
// a subgroup reads four B rows 128 bytes at a time), each accumulating all M rows. The eight
// partial sums of each output meet in workgroup memory, and lane 0 applies the epilogue.

// Params, the other bindings and ACT: matmul_io.wgsl (prepended).
@group(0) @binding(1) var<storage, read> a_buf: array<vec4<f32>>;

const COLS: u32 = 32u;
const LANES: u32 = 8u;
const MAX_M: u32 = 8u;

// partial[row · 256 + invocation]
var<workgroup> partial: array<f32, 2048>;

@compute @workgroup_size(256, 1, 1)
fn matmul_gemv(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let lane = li % LANES;
    let n = wid.x * COLS + li / LANES;
    let k4 = p.k / 4u;
    let a_base = wid.z * p.a_batch_stride / 4u;
    let b_base = wid.z * p.b_batch_stride / 4u;
    let col = min(n, p.n - 1u);

    var acc: array<f32, MAX_M>;
    for (var r = 0u; r < MAX_M; r++) {
        acc[r] = 0.0;
    }
    for (var kk = lane; kk < k4; kk += LANES) {
        let bv = load_b4(b_base + col * k4 + kk);
        for (var r = 0u; r < MAX_M; r++) {
            if (r < p.m) {
                acc[r] += dot(a_buf[a_base + r * k4 + kk], bv);
            }
        }
    }
    for (var r = 0u; r < MAX_M; r++) {
        partial[r * 256u + li] = acc[r];
    }
    workgroupBarrier();
    if (lane != 0u || n >= p.n) {
        return;
    }
    let c_base = wid.z * p.c_batch_stride;
    for (var r = 0u; r < MAX_M; r++) {
        if (r < p.m) {
            var s = 0.0;
            for (var l = 0u; l < LANES; l++) {
                s += partial[r * 256u + li + l];
            }
            let i = c_base + r * p.n + n;
            c_buf[i] = epilogue(i, n, s);
        }
    }
}
