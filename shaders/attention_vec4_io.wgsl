// The bindings of the vec4 attention kernels (prepended to attention_rows.wgsl,
// attention_flash.wgsl and attention_coop.wgsl): Q, K, V and O read
// and written as vec4s, so head_dim, every stride and every offset is a multiple of 4.

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q_buf: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> k_buf: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> v_buf: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> o_buf: array<vec4<f32>>;

// How many keys query `row` sees: all of them, or with causal masking those j ≤ row + Lk − Lq
// (none for rows before Lq − Lk).
fn visible_keys(row: u32) -> u32 {
    if (p.causal == 0u) {
        return p.lk;
    }
    return u32(clamp(i32(row) + 1 + i32(p.lk) - i32(p.lq), 0, i32(p.lk)));
}
