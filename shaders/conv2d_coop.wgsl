// conv2d_coop: conv2d_gemm's implicit GEMM (one group) on cooperative matrices (tensor cores):
// per image, out[co, pixel] = bias[co] + Σ_k weight[co, k] · patch[k, pixel] with
// k = (ci, ky, kx) and the patch gathered from x on the fly (zero outside the image); weights
// and patch rounded to f16, products accumulated in f32 (FR×FR×FR fragments, SG-wide
// subgroups: the cooperative-matrix prelude, shaders.rs CoopShape).
// Bindings come from conv2d_io.wgsl, behind `enable f16; enable wgpu_cooperative_matrix;`;
// Params from ops::conv::Params (appended).
//
// Mapping as in matmul_coop64.wgsl: a workgroup of WG invocations ((64 / 2FR)² subgroups of SG;
// 128, 256 or 512) owns 64 output channels × 64 output pixels, each subgroup a 2FR×2FR block as
// 2×2 accumulators; K is
// walked 32 at a time, the next slice's weights and patch values read into registers while
// the tensor cores multiply the current one from workgroup memory.
//
// K order: PyTorch's (ci, ky, kx), or, with TAP_MAJOR (the launcher sets it where cin is a
// multiple of 32 and the kernel has more than one tap), (ky, kx, ci): every slice is then 32
// channels of one tap, so its input pixel is bounds-checked once per slice and the channel walk
// is a constant stride, instead of splitting every element's k into channel and tap (integer
// work that outweighed the tensor cores' on an H200: 7 TFLOPS against the matmul's 34–40).
// The weights stay [cout, cin, kh, kw] and are read at a stride of kh·kw.

const CC_BM: u32 = 64u;
const CC_BN: u32 = 64u;
const CC_BK: u32 = 32u;
const CC_THREADS: u32 = WG;
// Elements per invocation of a 64 × 32 slice and of the 64 × 64 tile.
const CC_SHARES: u32 = 2048u / WG;
const CC_TILE_SHARES: u32 = 4096u / WG;
// cw_sh[co * CC_SA + k], cx_sh[k * CC_SB + pixel], cc_sh[co * CC_BN + pixel].
const CC_SA: u32 = 40u;
const CC_SB: u32 = 72u;

override TAP_MAJOR: bool = false;

var<workgroup> cw_sh: array<f16, 2560>;  // 64 × CC_SA
var<workgroup> cx_sh: array<f16, 2304>;  // 32 × CC_SB
var<workgroup> cc_sh: array<f32, 4096>;  // 64 × 64

// Weight [cout, kdim] element of this invocation's i-th share of the slice at k0.
fn cc_weight(co_base: u32, k0: u32, kdim: u32, e: u32) -> f32 {
    let co = co_base + e / CC_BK;
    let k = k0 + e % CC_BK;
    if (co < p.cout && k < kdim) {
        return weight[co * kdim + k];
    }
    return 0.0;
}

// Patch element k = (ci, ky, kx) of the i-th share. Neighbouring invocations take
// neighbouring output pixels of one tap, and an invocation's pixel is the same in every share
// of every slice (li % CC_BN: CC_THREADS is a multiple of CC_BN), so its top-left input
// coordinates (iy0, ix0) are worked out once, and only divisions by the constant kernel size
// are left per element. `pixel_ok`: the pixel is inside the output.
fn cc_patch(bi: u32, k: u32, kdim: u32, iy0: i32, ix0: i32, pixel_ok: bool) -> f32 {
    if (pixel_ok && k < kdim) {
        let taps = KH * KW;
        let ci = k / taps;
        let t = k % taps;
        let iy = iy0 + i32(t / KW);
        let ix = ix0 + i32(t % KW);
        if (iy >= 0 && ix >= 0 && u32(iy) < p.h && u32(ix) < p.w) {
            return x[((bi * p.cin + ci) * p.h + u32(iy)) * p.w + u32(ix)];
        }
    }
    return 0.0;
}

// Where this invocation's shares of the tap-major slice at k0 (k = tap · cin + ci: channels
// c0 .. c0 + 32 of tap t) start: `w` the weight index of its first share (its channel
// c0 + li % CC_BK, output channel `co_row`), `x` the input index of its first share (channel
// c0 + li / CC_BN, the tap's pixel), `ok` whether that pixel is inside the image (and the
// output pixel inside the output).
struct TapSlice {
    w: u32,
    x: u32,
    ok: bool,
}

fn cc_tap_slice(
    bi: u32,
    co_row: u32,
    k0: u32,
    iy0: i32,
    ix0: i32,
    pixel_ok: bool,
    li: u32,
) -> TapSlice {
    let t = k0 / p.cin;
    let c0 = k0 % p.cin;
    let iy = iy0 + i32(t / KW);
    let ix = ix0 + i32(t % KW);
    let ok = pixel_ok && iy >= 0 && ix >= 0 && u32(iy) < p.h && u32(ix) < p.w;
    let pixel = select(0u, u32(iy) * p.w + u32(ix), ok);
    let x = (bi * p.cin + c0 + li / CC_BN) * p.h * p.w + pixel;
    let w = co_row * p.cin * KH * KW + (c0 + li % CC_BK) * KH * KW + t;
    return TapSlice(w, x, ok);
}

// Reads the shares of the tap-major slice `s` into rw and rx: share i is output channel
// co_row + i · steps.x (weights, steps.y apart) and the input channel steps.z further on.
fn cc_load_tap_slice(
    rw: ptr<function, array<f32, CC_SHARES>>,
    rx: ptr<function, array<f32, CC_SHARES>>,
    s: TapSlice,
    co_row: u32,
    steps: vec3<u32>,
) {
    for (var i = 0u; i < CC_SHARES; i++) {
        (*rw)[i] = 0.0;
        if (co_row + i * steps.x < p.cout) {
            (*rw)[i] = weight[s.w + i * steps.y];
        }
    }
    if (s.ok) {
        for (var i = 0u; i < CC_SHARES; i++) {
            (*rx)[i] = x[s.x + i * steps.z];
        }
    } else {
        for (var i = 0u; i < CC_SHARES; i++) {
            (*rx)[i] = 0.0;
        }
    }
}

@compute @workgroup_size(WG, 1, 1)
fn conv2d_coop(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let pixels = p.oh * p.ow;
    let kdim = p.cin * KH * KW;
    let co_base = wid.y * CC_BM;
    let pix_base = wid.x * CC_BN;
    let bi = wid.z;
    let sg = li / SG;
    let per_row = CC_BN / (2u * FR);
    let wr = 2u * FR * (sg / per_row);
    let wc = 2u * FR * (sg % per_row);

    for (var i = 0u; i < CC_TILE_SHARES; i++) {
        cc_sh[li + i * CC_THREADS] = 0.0;
    }
    workgroupBarrier();
    var c00 = coopLoadT<FragC>(&cc_sh[0], CC_BN);
    var c01 = c00;
    var c10 = c00;
    var c11 = c00;

    // This invocation's output pixel (the same in every share) and its first tap's input
    // coordinates; its i-th patch share is tap row li / CC_BN + i · (CC_THREADS / CC_BN).
    let q = pix_base + li % CC_BN;
    let pixel_ok = q < pixels;
    let iy0 = i32((q / p.ow) * p.stride_h) - i32(p.pad_top);
    let ix0 = i32((q % p.ow) * p.stride_w) - i32(p.pad_left);
    let tap0 = li / CC_BN;
    let tap_step = CC_THREADS / CC_BN;

    // 64 × 32 weights and 32 × 64 patch values per slice: CC_SHARES (16, 8 or 4) of each per
    // invocation.
    var rw: array<f32, CC_SHARES>;
    var rx: array<f32, CC_SHARES>;
    // Tap-major: share i of a slice is output channel co_row + i · co_step (weights) and input
    // channel + i · tap_step (patch), i.e. strides w_step and x_step from the slice's start.
    let co_row = co_base + li / CC_BK;
    let co_step = CC_THREADS / CC_BK;
    let w_step = co_step * kdim;
    let x_step = tap_step * p.h * p.w;
    if (TAP_MAJOR) {
        let s = cc_tap_slice(bi, co_row, 0u, iy0, ix0, pixel_ok, li);
        cc_load_tap_slice(&rw, &rx, s, co_row, vec3<u32>(co_step, w_step, x_step));
    } else {
        for (var i = 0u; i < CC_SHARES; i++) {
            rw[i] = cc_weight(co_base, 0u, kdim, li + i * CC_THREADS);
            rx[i] = cc_patch(bi, tap0 + i * tap_step, kdim, iy0, ix0, pixel_ok);
        }
    }

    for (var k0 = 0u; k0 < kdim; k0 += CC_BK) {
        for (var i = 0u; i < CC_SHARES; i++) {
            let e = li + i * CC_THREADS;
            cw_sh[(e / CC_BK) * CC_SA + e % CC_BK] = f16(rw[i]);
            cx_sh[(e / CC_BN) * CC_SB + e % CC_BN] = f16(rx[i]);
        }
        workgroupBarrier();
        let k1 = k0 + CC_BK;
        if (TAP_MAJOR && k1 < kdim) {
            let s = cc_tap_slice(bi, co_row, k1, iy0, ix0, pixel_ok, li);
            cc_load_tap_slice(&rw, &rx, s, co_row, vec3<u32>(co_step, w_step, x_step));
        } else if (k1 < kdim) {
            for (var i = 0u; i < CC_SHARES; i++) {
                rw[i] = cc_weight(co_base, k1, kdim, li + i * CC_THREADS);
                rx[i] = cc_patch(bi, k1 + tap0 + i * tap_step, kdim, iy0, ix0, pixel_ok);
            }
        }
        for (var kk = 0u; kk < CC_BK / FR; kk++) {
            let a0 = coopLoadT<FragA>(&cw_sh[wr * CC_SA + FR * kk], CC_SA);
            let a1 = coopLoadT<FragA>(&cw_sh[(wr + FR) * CC_SA + FR * kk], CC_SA);
            let b0 = coopLoadT<FragB>(&cx_sh[FR * kk * CC_SB + wc], CC_SB);
            let b1 = coopLoadT<FragB>(&cx_sh[FR * kk * CC_SB + wc + FR], CC_SB);
            c00 = coopMultiplyAdd(a0, b0, c00);
            c01 = coopMultiplyAdd(a0, b1, c01);
            c10 = coopMultiplyAdd(a1, b0, c10);
            c11 = coopMultiplyAdd(a1, b1, c11);
        }
        workgroupBarrier();
    }

    coopStoreT(c00, &cc_sh[wr * CC_BN + wc], CC_BN);
    coopStoreT(c01, &cc_sh[wr * CC_BN + wc + FR], CC_BN);
    coopStoreT(c10, &cc_sh[(wr + FR) * CC_BN + wc], CC_BN);
    coopStoreT(c11, &cc_sh[(wr + FR) * CC_BN + wc + FR], CC_BN);
    workgroupBarrier();

    let out_base = bi * p.cout * pixels;
    for (var i = 0u; i < CC_TILE_SHARES; i++) {
        let e = li + i * CC_THREADS;
        let co = co_base + e / CC_BN;
        let q = pix_base + e % CC_BN;
        if (co < p.cout && q < pixels) {
            var v = cc_sh[e];
            if (p.has_bias != 0u) {
                v += bias[co];
            }
            out[out_base + co * pixels + q] = v;
        }
    }
}
