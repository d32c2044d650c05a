// The K-slice staging that matmul_coop64.wgsl and matmul_coop128.wgsl share (appended to
// each): A's binding, each invocation's vec4 shares of an A slice (BM rows × BK = 32) and of a
// B slice (TRANS_B: BN rows × 32, 2·BN with the gates; otherwise 32 × BN) read into registers
// and stored into workgroup memory as f16, and B fragments read back. The kernel declares BM,
// BN, SA, SB, SBN, the workgroup arrays a_sh and b_sh, and TRANS_B.

@group(0) @binding(1) var<storage, read> a_buf: array<vec4<f32>>;

// The A vec4 of share v: row v / 8 of the slice, 4 along K.
fn a_load(a_base: u32, row0: u32, k0: u32, v: u32) -> vec4<f32> {
    let r = v / 8u;
    let k = k0 + 4u * (v % 8u);
    let m = row0 + r;
    if (m < p.m && k < p.k) {
        return a_buf[(a_base + m * p.k + k) / 4u];
    }
    return vec4<f32>(0.0);
}

// The B vec4 of the i-th share: TRANS_B, row r of the slice is B row n0 + r (gates: N + n0 + r
// - BN), 4 along K; otherwise row r is K index k0 + r, 4 along N.
fn b_load(b_base: u32, col0: u32, k0: u32, v: u32) -> vec4<f32> {
    if (TRANS_B) {
        let r = v / 8u;
        let k = k0 + 4u * (v % 8u);
        var n = col0 + (r % BN);
        let valid = n < p.n && k < p.k;
        if (r >= BN) {
            n += p.n;
        }
        if (valid) {
            return load_b4((b_base + n * p.k + k) / 4u);
        }
        return vec4<f32>(0.0);
    }
    let r = v / (BN / 4u);
    let k = k0 + r;
    let n = col0 + 4u * (v % (BN / 4u));
    if (k < p.k && n < p.n) {
        return load_b4((b_base + k * p.n + n) / 4u);
    }
    return vec4<f32>(0.0);
}

fn a_store(v: u32, x: vec4<f32>) {
    let at = (v / 8u) * SA + 4u * (v % 8u);
    a_sh[at] = f16(x.x);
    a_sh[at + 1u] = f16(x.y);
    a_sh[at + 2u] = f16(x.z);
    a_sh[at + 3u] = f16(x.w);
}

fn b_store(v: u32, x: vec4<f32>) {
    var at: u32;
    if (TRANS_B) {
        at = (v / 8u) * SB + 4u * (v % 8u);
    } else {
        at = (v / (BN / 4u)) * SBN + 4u * (v % (BN / 4u));
    }
    b_sh[at] = f16(x.x);
    b_sh[at + 1u] = f16(x.y);
    b_sh[at + 2u] = f16(x.z);
    b_sh[at + 3u] = f16(x.w);
}

// Columns FR·j.. of op(B) for K rows FR·kk.. of the slice, as a B operand; `gate` picks the
// gate rows (TRANS_B only).
fn b_frag(j: u32, kk: u32, gate: bool) -> FragB {
    if (TRANS_B) {
        var r = FR * j;
        if (gate) {
            r += BN;
        }
        // Column-major: element (k, n) at b_sh[n * SB + k].
        return coopLoad<FragB>(&b_sh[r * SB + FR * kk], SB);
    }
    return coopLoadT<FragB>(&b_sh[FR * kk * SBN + FR * j], SBN);
}
