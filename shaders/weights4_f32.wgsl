// Weight prelude for matmul_rows.wgsl: B stored as f32, read four at a time.
@group(0) @binding(2) var<storage, read> b_buf: array<vec4<f32>>;

fn load_b4(i: u32) -> vec4<f32> {
    return b_buf[i];
}
