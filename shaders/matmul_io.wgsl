// Declarations every matmul kernel shares: the uniform p (Params: ops::matmul::Params,
// appended), the bias, output and residual bindings, and the activation override. A (binding 1) is declared
// by matmul_operands.wgsl (scalars) or by the kernels that read it as vec4s along K; B
// (binding 2) by a weights_*.wgsl or weights4_*.wgsl prelude. Batch strides are in scalars.
//
//   C[b] = act(A[b] · op(B[b]) (+ bias)) (+ residual[b])
//   A: [M, K] f32, C and residual: [M, N] f32, bias: [N] f32 (2N for gated units)

// Activation code (activation.wgsl) applied after the bias and before the residual: an
// override, so kernels without one carry no activation code (on llvmpipe its mere presence in
// the store path cost small products 10–15 %).
override ACT: u32 = 0u;

// struct Params: generated from the Rust declaration (ops::matmul::Params, kernel_params!)
// and appended by shaders::Module::source.
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> c_buf: array<f32>;
@group(0) @binding(5) var<storage, read> residual: array<f32>;
