// Weight prelude for matmul.wgsl: B stored as f16 pairs packed in u32 (element 2j in the low
// half of word j), widened with unpack2x16float. Works on every adapter.
@group(0) @binding(2) var<storage, read> b_buf: array<u32>;

fn load_b(i: u32) -> f32 {
    let pair = unpack2x16float(b_buf[i >> 1u]);
    return select(pair.x, pair.y, (i & 1u) == 1u);
}
