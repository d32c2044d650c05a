// Weight prelude for matmul.wgsl: B stored as native f16 (needs the shader-f16 feature).
enable f16;

@group(0) @binding(2) var<storage, read> b_buf: array<f16>;

fn load_b(i: u32) -> f32 {
    return f32(b_buf[i]);
}
