// Batched matrix multiply for GPUs, large products: 64×64 tiles of C, 8×8 outputs per
// invocation (the register blocking that the fast WGSL GEMMs share, see the perf notes), f32
// accumulation.
//
//   C[b] = act(A[b] · op(B[b]) (+ bias)) (+ residual[b])
//   A: [M, K] f32, C and residual: [M, N] f32, bias: [N] f32
//   op(B) = B with B stored [K, N]          (TRANS_B = false)
//         = Bᵀ with B stored [N, K]         (TRANS_B = true: PyTorch Linear weights)
//
// B comes from a prelude (weights_*.wgsl) that declares binding 2 and `load_b(i) -> f32`. A
// batch stride of 0 broadcasts that operand over the batch. No gated units (matmul.wgsl has
// them).
//
// Thread mapping: a workgroup of 8×8 invocations owns a 64×64 tile of C; invocation (x, y) owns
// rows 8y..8y+7 and columns 8x..8x+7, in 16 named vec4 accumulators (c<row><l|r>, left and
// right four columns). K is walked in steps of 16 through workgroup-memory tiles stored K-major
// (a_tile[k][m], b_tile[k][n]), so each step reads two vec4s of A and two of B per invocation
// for 64 multiply-adds (four per load, twice the 32×32 kernel's). Loads outside the matrix read
// zero and stores outside it are skipped, so any M, N, K work.

struct Params {
    m: u32,
    n: u32,
    k: u32,
    batch: u32,
    a_batch_stride: u32,
    b_batch_stride: u32,
    c_batch_stride: u32,
    // 1: + bias[n]; 2: + residual (same layout as C).
    flags: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a_buf: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> c_buf: array<f32>;
@group(0) @binding(5) var<storage, read> residual: array<f32>;

override TRANS_B: bool = true;
// Activation code (activation.wgsl) applied after the bias and before the residual.
override ACT: u32 = 0u;

const TM: u32 = 64u;
const TN: u32 = 64u;
const TK: u32 = 16u;
const THREADS: u32 = 64u;

var<workgroup> a_tile: array<f32, 1024>;
var<workgroup> b_tile: array<f32, 1024>;

fn a4(i: u32) -> vec4<f32> {
    return vec4<f32>(a_tile[i], a_tile[i + 1u], a_tile[i + 2u], a_tile[i + 3u]);
}

fn b4(i: u32) -> vec4<f32> {
    return vec4<f32>(b_tile[i], b_tile[i + 1u], b_tile[i + 2u], b_tile[i + 3u]);
}

fn store_row(c_base: u32, m: u32, col: u32, left: vec4<f32>, right: vec4<f32>) {
    if (m >= p.m) {
        return;
    }
    for (var j = 0u; j < 8u; j++) {
        let n = col + j;
        if (n < p.n) {
            let i = c_base + m * p.n + n;
            c_buf[i] = epilogue(i, n, select(right[j % 4u], left[j % 4u], j < 4u));
        }
    }
}

@compute @workgroup_size(8, 8, 1)
fn matmul_tile64(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let row0 = wid.y * TM;
    let col0 = wid.x * TN;
    let a_base = wid.z * p.a_batch_stride;
    let b_base = wid.z * p.b_batch_stride;

    var c0l = vec4<f32>(0.0);
    var c0r = vec4<f32>(0.0);
    var c1l = vec4<f32>(0.0);
    var c1r = vec4<f32>(0.0);
    var c2l = vec4<f32>(0.0);
    var c2r = vec4<f32>(0.0);
    var c3l = vec4<f32>(0.0);
    var c3r = vec4<f32>(0.0);
    var c4l = vec4<f32>(0.0);
    var c4r = vec4<f32>(0.0);
    var c5l = vec4<f32>(0.0);
    var c5r = vec4<f32>(0.0);
    var c6l = vec4<f32>(0.0);
    var c6r = vec4<f32>(0.0);
    var c7l = vec4<f32>(0.0);
    var c7r = vec4<f32>(0.0);

    for (var k0 = 0u; k0 < p.k; k0 += TK) {
        // 1024 elements of each operand, 16 per invocation; 16 neighbouring invocations read
        // one row's 16 consecutive K values (A, and B when transposed).
        for (var i = 0u; i < (TM * TK) / THREADS; i++) {
            let e = li + i * THREADS;
            let ml = e / TK;
            let kl = e % TK;
            let m = row0 + ml;
            let k = k0 + kl;
            var v = 0.0;
            if (m < p.m && k < p.k) {
                v = a_buf[a_base + m * p.k + k];
            }
            a_tile[kl * TM + ml] = v;
        }
        for (var i = 0u; i < (TN * TK) / THREADS; i++) {
            let e = li + i * THREADS;
            var kl: u32;
            var nl: u32;
            if (TRANS_B) {
                nl = e / TK;
                kl = e % TK;
            } else {
                kl = e / TN;
                nl = e % TN;
            }
            let n = col0 + nl;
            let k = k0 + kl;
            var v = 0.0;
            if (n < p.n && k < p.k) {
                if (TRANS_B) {
                    v = load_b(b_base + n * p.k + k);
                } else {
                    v = load_b(b_base + k * p.n + n);
                }
            }
            b_tile[kl * TN + nl] = v;
        }
        workgroupBarrier();

        for (var kk = 0u; kk < TK; kk++) {
            let ai = kk * TM + lid.y * 8u;
            let a0 = a4(ai);
            let a1 = a4(ai + 4u);
            let bi = kk * TN + lid.x * 8u;
            let b0 = b4(bi);
            let b1 = b4(bi + 4u);
            c0l += a0.x * b0;
            c0r += a0.x * b1;
            c1l += a0.y * b0;
            c1r += a0.y * b1;
            c2l += a0.z * b0;
            c2r += a0.z * b1;
            c3l += a0.w * b0;
            c3r += a0.w * b1;
            c4l += a1.x * b0;
            c4r += a1.x * b1;
            c5l += a1.y * b0;
            c5r += a1.y * b1;
            c6l += a1.z * b0;
            c6r += a1.z * b1;
            c7l += a1.w * b0;
            c7r += a1.w * b1;
        }
        workgroupBarrier();
    }

    let c_base = wid.z * p.c_batch_stride;
    let row = row0 + lid.y * 8u;
    let col = col0 + lid.x * 8u;
    store_row(c_base, row + 0u, col, c0l, c0r);
    store_row(c_base, row + 1u, col, c1l, c1r);
    store_row(c_base, row + 2u, col, c2l, c2r);
    store_row(c_base, row + 3u, col, c3l, c3r);
    store_row(c_base, row + 4u, col, c4l, c4r);
    store_row(c_base, row + 5u, col, c5l, c5r);
    store_row(c_base, row + 6u, col, c6l, c6r);
    store_row(c_base, row + 7u, col, c7l, c7r);
}
