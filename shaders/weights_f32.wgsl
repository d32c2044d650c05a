// Weight prelude for matmul.wgsl: B stored as f32.
@group(0) @binding(2) var<storage, read> b_buf: array<f32>;

fn load_b(i: u32) -> f32 {
    return b_buf[i];
}
