// Layout helpers on 32-bit elements (f32, u32, i32 alike): strided copy and fill.
//
// copy:  for every index (j0, j1, i0, i1, i2, i3) of (outer.xy, shape) (up to 6 dims),
//        dst[out_offset + ⟨idx, out_strides⟩] = src[in_offset + ⟨idx, in_strides⟩].
//        Covers permute, slicing (split), concat (copy into a slice of the output), broadcast.
// fill:  dst[out_offset + i] = value for i < n.

// struct Params: generated from the Rust declaration (ops::layout::Params, kernel_params!)
// and appended by shaders::Module::source.
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<u32>;
@group(0) @binding(2) var<storage, read_write> dst: array<u32>;

const WG: u32 = 256u;

@compute @workgroup_size(256, 1, 1)
fn copy(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let i = (wid.x + wid.y * nwg.x) * WG + li;
    if (i >= p.n) {
        return;
    }
    let i3 = i % p.shape.w;
    let r2 = i / p.shape.w;
    let i2 = r2 % p.shape.z;
    let r1 = r2 / p.shape.z;
    let i1 = r1 % p.shape.y;
    let r0 = r1 / p.shape.y;
    let i0 = r0 % p.shape.x;
    let q = r0 / p.shape.x;
    let j = vec2<u32>(q / p.outer.y, q % p.outer.y);
    let idx = vec4<u32>(i0, i1, i2, i3);
    let o = dot(idx, p.out_strides) + dot(j, p.out_outer.xy);
    let s = dot(idx, p.in_strides) + dot(j, p.in_outer.xy);
    dst[p.out_offset + o] = src[p.in_offset + s];
}

@compute @workgroup_size(256, 1, 1)
fn fill(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let i = (wid.x + wid.y * nwg.x) * WG + li;
    if (i >= p.n) {
        return;
    }
    dst[p.out_offset + i] = p.value;
}

// to_rgba8: the first image of an NCHW f32 batch (values clipped to [0, 1]) → RGBA8 pixels
// packed in u32 (red in the low byte, alpha 255), rows `value` words apart so the buffer can be
// copied straight into a texture. Reuses Params: n = H·W, shape.x = H, shape.y = W,
// shape.z = H·W (channel plane), value = row pitch in pixels.
@compute @workgroup_size(256, 1, 1)
fn to_rgba8(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let i = (wid.x + wid.y * nwg.x) * WG + li;
    if (i >= p.n) {
        return;
    }
    let y = i / p.shape.y;
    let x = i % p.shape.y;
    let plane = p.shape.z;
    let r = bitcast<f32>(src[p.in_offset + i]);
    let g = bitcast<f32>(src[p.in_offset + plane + i]);
    let b = bitcast<f32>(src[p.in_offset + 2u * plane + i]);
    dst[y * p.value + x] = pack4x8unorm(vec4<f32>(r, g, b, 1.0));
}
