// Batched matrix multiply with f32 accumulation.
//
//   C[b] = act(A[b] · op(B[b]) (+ bias)) (+ residual[b])
//   A: [M, K] f32, C and residual: [M, N] f32, bias: [N] f32
//   op(B) = B with B stored [K, N]          (TRANS_B = false)
//         = Bᵀ with B stored [N, K]         (TRANS_B = true: PyTorch Linear weights)
//
// Declarations and operand reads come from matmul_operands.wgsl, B from a weights_*.wgsl prelude.
// A batch stride of 0 broadcasts that operand over the batch.
//
// Thread mapping: a workgroup of 8×8 invocations owns a 32×32 tile of C; invocation (x, y)
// owns rows 4y..4y+3 and columns 4x..4x+3, held in four named vec4 accumulators. K is walked
// in steps of 16 through workgroup-memory tiles; loads outside the matrix read zero, so any
// M, N, K work.

// Gated linear unit (GEGLU with the erf GELU as activation): B holds 2N rows, values then
// gates, and C[m, n] = (v + bias[n]) · act(g + bias[N + n]) (+ residual) with v, g the products
// with B rows n and N + n (TRANS_B only). A workgroup then covers 16 outputs: its 32 B rows are
// taken so that invocation x holds the values of outputs 2x, 2x + 1 in accumulator lanes 0, 1
// and their gates in lanes 2, 3.
override GATED: bool = false;

const TM: u32 = 32u;
const TN: u32 = 32u;
const TK: u32 = 16u;
const THREADS: u32 = 64u;

// a_tile[k * TM + m], b_tile[k * TN + n]
var<workgroup> a_tile: array<f32, 512>;
var<workgroup> b_tile: array<f32, 512>;

fn write_row(c_base: u32, m: u32, col: u32, v: vec4<f32>) {
    if (m >= p.m) {
        return;
    }
    if (GATED) {
        for (var j = 0u; j < 2u; j++) {
            let n = col + j;
            if (n < p.n) {
                let i = c_base + m * p.n + n;
                c_buf[i] = epilogue_gated(i, n, v[j], v[j + 2u]);
            }
        }
        return;
    }
    for (var j = 0u; j < 4u; j++) {
        let n = col + j;
        if (n < p.n) {
            let i = c_base + m * p.n + n;
            c_buf[i] = epilogue(i, n, v[j]);
        }
    }
}

@compute @workgroup_size(8, 8, 1)
fn matmul(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let row0 = wid.y * TM;
    let col0 = wid.x * TN;
    let a_base = wid.z * p.a_batch_stride;
    let b_base = wid.z * p.b_batch_stride;

    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);

    for (var k0 = 0u; k0 < p.k; k0 += TK) {
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
            var n = col0 + nl;
            var valid = n < p.n;
            if (GATED) {
                let out_n = wid.x * (TN / 2u) + (nl / 4u) * 2u + nl % 2u;
                valid = out_n < p.n;
                n = out_n + select(0u, p.n, nl % 4u >= 2u);
            }
            b_tile[kl * TN + nl] = b_at(b_base, n, k0 + kl, valid);
        }
        workgroupBarrier();

        for (var kk = 0u; kk < TK; kk++) {
            let ai = kk * TM + lid.y * 4u;
            let a = vec4<f32>(a_tile[ai], a_tile[ai + 1u], a_tile[ai + 2u], a_tile[ai + 3u]);
            let bi = kk * TN + lid.x * 4u;
            let b = vec4<f32>(b_tile[bi], b_tile[bi + 1u], b_tile[bi + 2u], b_tile[bi + 3u]);
            acc0 += a.x * b;
            acc1 += a.y * b;
            acc2 += a.z * b;
            acc3 += a.w * b;
        }
        workgroupBarrier();
    }

    let c_base = wid.z * p.c_batch_stride;
    let row = row0 + lid.y * 4u;
    var col = col0 + lid.x * 4u;
    if (GATED) {
        col = wid.x * (TN / 2u) + lid.x * 2u;
    }
    write_row(c_base, row, col, acc0);
    write_row(c_base, row + 1u, col, acc1);
    write_row(c_base, row + 2u, col, acc2);
    write_row(c_base, row + 3u, col, acc3);
}
