// Register-blocked matrix multiply for adapters that run on the CPU (lavapipe/llvmpipe, WARP,
// SwiftShader), where workgroup memory and barriers buy nothing (the CPU caches do the tiling)
// and what counts is arithmetic per load and vector-typed loads.
//
//   C[b] = act(A[b] · B[b]ᵀ (+ bias)) (+ residual[b])
//   A: [M, K] f32, B: [N, K] (PyTorch Linear layout), C and residual: [M, N]
//
// Needs K % 4 == 0: A and B are read as vec4 along K. B comes from a prelude (weights4_*.wgsl)
// that declares binding 2 and `load_b4(i) -> vec4<f32>` (i counts vec4s). Batch strides are in
// scalars; a B batch stride of 0 shares B over the batch.
//
// Thread mapping: a workgroup of 8×8 invocations owns a 64×128 block of C. Invocation (x, y)
// owns the 8 rows 8·(8·wid.y + y) + 0..7 and the 16 columns 128·wid.x + x + 8·j (j = 0..15):
// the eight lanes that a CPU runs as one SIMD vector read the same A rows (uniform loads) and
// neighbouring B rows. Per vec4 step of K it loads 8 A vec4s and 16 B vec4s and does 128 dot
// products, in 32 named vec4 accumulators (acc<row><quad>; component j of quad q is column
// x + 32·q + 8·j). Out-of-range rows and columns are clamped for loading and skipped when
// storing, so any M and N work.

// Gated linear unit (GEGLU with the erf GELU as activation): B holds 2N rows, values then
// gates, and C[m, n] = (v + bias[n]) · act(g + bias[N + n]) (+ residual) with v, g the products
// with B rows n and N + n. A workgroup then covers 64 outputs: quads 0, 1 of an invocation read
// value rows and quads 2, 3 the gate rows of the same outputs.
override GATED: bool = false;

// Params, the other bindings and ACT: matmul_io.wgsl (prepended).
@group(0) @binding(1) var<storage, read> a_buf: array<vec4<f32>>;

// Four B rows (columns of C: col, col + 8, col + 16, col + 24) at vec4 step kk, as the columns
// of a matrix, so `a * quad` gives the four dot products at once.
fn b_quad(base: u32, col: u32, kk: u32, k4: u32, last: u32) -> mat4x4<f32> {
    return mat4x4<f32>(
        load_b4(base + min(col, last) * k4 + kk),
        load_b4(base + min(col + 8u, last) * k4 + kk),
        load_b4(base + min(col + 16u, last) * k4 + kk),
        load_b4(base + min(col + 24u, last) * k4 + kk),
    );
}

fn store_gated(c_base: u32, row: u32, col: u32, v: vec4<f32>, g: vec4<f32>) {
    if (row >= p.m) {
        return;
    }
    for (var j = 0u; j < 4u; j++) {
        let n = col + 8u * j;
        if (n < p.n) {
            let i = c_base + row * p.n + n;
            c_buf[i] = epilogue_gated(i, n, v[j], g[j]);
        }
    }
}

// Row `row` of the invocation's block: quads q = 0..3 hold columns col + 32·q + 8·j, or in
// GATED mode values (q = 0, 1) and gates (q = 2, 3) of outputs col + 32·q + 8·j.
fn store_row(c_base: u32, row: u32, col: u32, a0: vec4<f32>, a1: vec4<f32>, a2: vec4<f32>, a3: vec4<f32>) {
    if (GATED) {
        store_gated(c_base, row, col, a0, a2);
        store_gated(c_base, row, col + 32u, a1, a3);
    } else {
        store(c_base, row, col, a0);
        store(c_base, row, col + 32u, a1);
        store(c_base, row, col + 64u, a2);
        store(c_base, row, col + 96u, a3);
    }
}

fn store(c_base: u32, row: u32, col: u32, v: vec4<f32>) {
    if (row >= p.m) {
        return;
    }
    for (var j = 0u; j < 4u; j++) {
        let n = col + 8u * j;
        if (n < p.n) {
            let i = c_base + row * p.n + n;
            c_buf[i] = epilogue(i, n, v[j]);
        }
    }
}

@compute @workgroup_size(8, 8, 1)
fn matmul_rows(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let k4 = p.k / 4u;
    let row0 = (wid.y * 8u + lid.y) * 8u;
    // B rows of the four quads, and the last row each may read (loads clamp to it).
    let col0 = select(wid.x * 128u, wid.x * 64u, GATED) + lid.x;
    let qcol = select(
        vec4<u32>(col0, col0 + 32u, col0 + 64u, col0 + 96u),
        vec4<u32>(col0, col0 + 32u, p.n + col0, p.n + col0 + 32u),
        GATED,
    );
    let qlast = select(
        vec4<u32>(p.n - 1u),
        vec4<u32>(p.n - 1u, p.n - 1u, 2u * p.n - 1u, 2u * p.n - 1u),
        GATED,
    );
    let a_base = wid.z * (p.a_batch_stride / 4u);
    let b_base = wid.z * (p.b_batch_stride / 4u);
    let last_row = p.m - 1u;

    let a_row0 = a_base + min(row0 + 0u, last_row) * k4;
    let a_row1 = a_base + min(row0 + 1u, last_row) * k4;
    let a_row2 = a_base + min(row0 + 2u, last_row) * k4;
    let a_row3 = a_base + min(row0 + 3u, last_row) * k4;
    let a_row4 = a_base + min(row0 + 4u, last_row) * k4;
    let a_row5 = a_base + min(row0 + 5u, last_row) * k4;
    let a_row6 = a_base + min(row0 + 6u, last_row) * k4;
    let a_row7 = a_base + min(row0 + 7u, last_row) * k4;

    var acc00 = vec4<f32>(0.0); var acc01 = vec4<f32>(0.0); var acc02 = vec4<f32>(0.0); var acc03 = vec4<f32>(0.0);
    var acc10 = vec4<f32>(0.0); var acc11 = vec4<f32>(0.0); var acc12 = vec4<f32>(0.0); var acc13 = vec4<f32>(0.0);
    var acc20 = vec4<f32>(0.0); var acc21 = vec4<f32>(0.0); var acc22 = vec4<f32>(0.0); var acc23 = vec4<f32>(0.0);
    var acc30 = vec4<f32>(0.0); var acc31 = vec4<f32>(0.0); var acc32 = vec4<f32>(0.0); var acc33 = vec4<f32>(0.0);
    var acc40 = vec4<f32>(0.0); var acc41 = vec4<f32>(0.0); var acc42 = vec4<f32>(0.0); var acc43 = vec4<f32>(0.0);
    var acc50 = vec4<f32>(0.0); var acc51 = vec4<f32>(0.0); var acc52 = vec4<f32>(0.0); var acc53 = vec4<f32>(0.0);
    var acc60 = vec4<f32>(0.0); var acc61 = vec4<f32>(0.0); var acc62 = vec4<f32>(0.0); var acc63 = vec4<f32>(0.0);
    var acc70 = vec4<f32>(0.0); var acc71 = vec4<f32>(0.0); var acc72 = vec4<f32>(0.0); var acc73 = vec4<f32>(0.0);

    for (var kk = 0u; kk < k4; kk++) {
        let b0 = b_quad(b_base, qcol.x, kk, k4, qlast.x);
        let b1 = b_quad(b_base, qcol.y, kk, k4, qlast.y);
        let b2 = b_quad(b_base, qcol.z, kk, k4, qlast.z);
        let b3 = b_quad(b_base, qcol.w, kk, k4, qlast.w);
        let a0 = a_buf[a_row0 + kk];
        acc00 += a0 * b0; acc01 += a0 * b1; acc02 += a0 * b2; acc03 += a0 * b3;
        let a1 = a_buf[a_row1 + kk];
        acc10 += a1 * b0; acc11 += a1 * b1; acc12 += a1 * b2; acc13 += a1 * b3;
        let a2 = a_buf[a_row2 + kk];
        acc20 += a2 * b0; acc21 += a2 * b1; acc22 += a2 * b2; acc23 += a2 * b3;
        let a3 = a_buf[a_row3 + kk];
        acc30 += a3 * b0; acc31 += a3 * b1; acc32 += a3 * b2; acc33 += a3 * b3;
        let a4 = a_buf[a_row4 + kk];
        acc40 += a4 * b0; acc41 += a4 * b1; acc42 += a4 * b2; acc43 += a4 * b3;
        let a5 = a_buf[a_row5 + kk];
        acc50 += a5 * b0; acc51 += a5 * b1; acc52 += a5 * b2; acc53 += a5 * b3;
        let a6 = a_buf[a_row6 + kk];
        acc60 += a6 * b0; acc61 += a6 * b1; acc62 += a6 * b2; acc63 += a6 * b3;
        let a7 = a_buf[a_row7 + kk];
        acc70 += a7 * b0; acc71 += a7 * b1; acc72 += a7 * b2; acc73 += a7 * b3;
    }

    let c_base = wid.z * p.c_batch_stride;
    store_row(c_base, row0 + 0u, col0, acc00, acc01, acc02, acc03);
    store_row(c_base, row0 + 1u, col0, acc10, acc11, acc12, acc13);
    store_row(c_base, row0 + 2u, col0, acc20, acc21, acc22, acc23);
    store_row(c_base, row0 + 3u, col0, acc30, acc31, acc32, acc33);
    store_row(c_base, row0 + 4u, col0, acc40, acc41, acc42, acc43);
    store_row(c_base, row0 + 5u, col0, acc50, acc51, acc52, acc53);
    store_row(c_base, row0 + 6u, col0, acc60, acc61, acc62, acc63);
    store_row(c_base, row0 + 7u, col0, acc70, acc71, acc72, acc73);
}
