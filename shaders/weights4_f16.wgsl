// Weight prelude for matmul_rows.wgsl: B stored as native f16, read four at a time (needs the
// shader-f16 feature).
enable f16;

@group(0) @binding(2) var<storage, read> b_buf: array<vec4<f16>>;

fn load_b4(i: u32) -> vec4<f32> {
    return vec4<f32>(b_buf[i]);
}
