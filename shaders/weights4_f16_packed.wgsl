// Weight prelude for matmul_rows.wgsl: B stored as f16, four per vec2<u32> (element 4j in the low
// half of word 2j), widened with unpack2x16float. Works on every adapter.
@group(0) @binding(2) var<storage, read> b_buf: array<vec2<u32>>;

fn load_b4(i: u32) -> vec4<f32> {
    let w = b_buf[i];
    return vec4<f32>(unpack2x16float(w.x), unpack2x16float(w.y));
}
