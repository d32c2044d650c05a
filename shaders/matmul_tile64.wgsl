// Batched matrix multiply for GPUs, large products: 64×64 tiles of C, 8×8 outputs per
// invocation (the register blocking that the fast WGSL GEMMs share, see the perf notes), f32
// accumulation.
//
//   C[b] = act(A[b] · op(B[b]) (+ bias)) (+ residual[b])
//   A: [M, K] f32, C and residual: [M, N] f32, bias: [N] f32
//   op(B) = B with B stored [K, N]          (TRANS_B = false)
//         = Bᵀ with B stored [N, K]         (TRANS_B = true: PyTorch Linear weights)
//
// Declarations and operand reads come from matmul_operands.wgsl, B from a weights_*.wgsl
// prelude. No gated units (matmul.wgsl has them).
//
// Thread mapping: a workgroup of 8×8 invocations owns a 64×64 tile of C; invocation (x, y) owns
// rows 8y..8y+7 and columns 8x..8x+7, in 16 named vec4 accumulators (c<row><l|r>, left and
// right four columns). K is walked in steps of 16 through workgroup-memory tiles stored K-major
// (a_tile[k][m], b_tile[k][n]), so each step reads two vec4s of A and two of B per invocation
// for 64 multiply-adds (four per load, twice the 32×32 kernel's). Loads outside the matrix read
// zero and stores outside it are skipped, so any M, N, K work.

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

    var acc: Acc8;

    for (var k0 = 0u; k0 < p.k; k0 += TK) {
        // 1024 elements of each operand, 16 per invocation; 16 neighbouring invocations read
        // one row's 16 consecutive K values (A, and B when transposed).
        for (var i = 0u; i < (TM * TK) / THREADS; i++) {
            let e = li + i * THREADS;
            let ml = e / TK;
            let kl = e % TK;
            a_tile[kl * TM + ml] = a_at(a_base, row0 + ml, k0 + kl);
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
            b_tile[kl * TN + nl] = b_at(b_base, n, k0 + kl, n < p.n);
        }
        workgroupBarrier();

        for (var kk = 0u; kk < TK; kk++) {
            let ai = kk * TM + lid.y * 8u;
            let a0 = a4(ai);
            let a1 = a4(ai + 4u);
            let bi = kk * TN + lid.x * 8u;
            let b0 = b4(bi);
            let b1 = b4(bi + 4u);
            acc8_fma(&acc, a0, a1, b0, b1);
        }
        workgroupBarrier();
    }

    let c_base = wid.z * p.c_batch_stride;
    let row = row0 + lid.y * 8u;
    let col = col0 + lid.x * 8u;
    store_row(c_base, row + 0u, col, acc.c0l, acc.c0r);
    store_row(c_base, row + 1u, col, acc.c1l, acc.c1r);
    store_row(c_base, row + 2u, col, acc.c2l, acc.c2r);
    store_row(c_base, row + 3u, col, acc.c3l, acc.c3r);
    store_row(c_base, row + 4u, col, acc.c4l, acc.c4r);
    store_row(c_base, row + 5u, col, acc.c5l, acc.c5r);
    store_row(c_base, row + 6u, col, acc.c6l, acc.c6r);
    store_row(c_base, row + 7u, col, acc.c7l, acc.c7r);
}
