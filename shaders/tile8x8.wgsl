// An 8×8 register block of the GPU tiled kernels (matmul_tile64.wgsl, conv2d.wgsl's
// conv2d_gemm): 16 named vec4 accumulators (row r's left and right four columns in c<r>l,
// c<r>r), named so that drivers keep them in registers, and one K step's 64 multiply-adds.

struct Acc8 {
    c0l: vec4<f32>,
    c0r: vec4<f32>,
    c1l: vec4<f32>,
    c1r: vec4<f32>,
    c2l: vec4<f32>,
    c2r: vec4<f32>,
    c3l: vec4<f32>,
    c3r: vec4<f32>,
    c4l: vec4<f32>,
    c4r: vec4<f32>,
    c5l: vec4<f32>,
    c5r: vec4<f32>,
    c6l: vec4<f32>,
    c6r: vec4<f32>,
    c7l: vec4<f32>,
    c7r: vec4<f32>,
}

// acc += a ⊗ b for one K step: a0, a1 the block's 8 rows, b0, b1 its 8 columns.
fn acc8_fma(acc: ptr<function, Acc8>, a0: vec4<f32>, a1: vec4<f32>, b0: vec4<f32>, b1: vec4<f32>) {
    (*acc).c0l += a0.x * b0;
    (*acc).c0r += a0.x * b1;
    (*acc).c1l += a0.y * b0;
    (*acc).c1r += a0.y * b1;
    (*acc).c2l += a0.z * b0;
    (*acc).c2r += a0.z * b1;
    (*acc).c3l += a0.w * b0;
    (*acc).c3r += a0.w * b1;
    (*acc).c4l += a1.x * b0;
    (*acc).c4r += a1.x * b1;
    (*acc).c5l += a1.y * b0;
    (*acc).c5r += a1.y * b1;
    (*acc).c6l += a1.z * b0;
    (*acc).c6r += a1.z * b1;
    (*acc).c7l += a1.w * b0;
    (*acc).c7r += a1.w * b1;
}
