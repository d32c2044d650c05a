// Declarations every matmul kernel shares (mirrored by ops::matmul::Params): parameters, the
// bias, output and residual bindings, and the activation override. A (binding 1) is declared
// by matmul_params.wgsl (scalars) or by the kernels that read it as vec4s along K; B
// (binding 2) by a weights_*.wgsl or weights4_*.wgsl prelude. Batch strides are in scalars.
//
//   C[b] = act(A[b] · op(B[b]) (+ bias)) (+ residual[b])
//   A: [M, K] f32, C and residual: [M, N] f32, bias: [N] f32 (2N for gated units)

// Activation code (activation.wgsl) applied after the bias and before the residual: an
// override, so kernels without one carry no activation code (on llvmpipe its mere presence in
// the store path cost small products 10–15 %).
override ACT: u32 = 0u;

struct Params {
    m: u32,
    n: u32,
    k: u32,
    batch: u32,
    a_batch_stride: u32,
    b_batch_stride: u32,
    c_batch_stride: u32,
    // 1: + bias[n]; 2: + residual (same layout as C).
    flags: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> c_buf: array<f32>;
@group(0) @binding(5) var<storage, read> residual: array<f32>;
