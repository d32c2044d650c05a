// The matmul kernels' epilogue (appended to every matmul kernel; matmul_io.wgsl declares `p`
// (with `flags` and `n`), `bias`, `residual` and the override `ACT`; activation.wgsl supplies
// `activation`). flags: 1 = + bias[n], 2 = + residual[i].

// The epilogue: bias, activation, residual (per flags) on the accumulated value of C[i].
fn epilogue(i: u32, n: u32, acc: f32) -> f32 {
    var x = acc;
    if ((p.flags & 1u) != 0u) {
        x += bias[n];
    }
    x = activation(ACT, x);
    if ((p.flags & 2u) != 0u) {
        x += residual[i];
    }
    return x;
}

// The gated epilogue: (value + bias) · act(gate + gate bias) + residual.
fn epilogue_gated(i: u32, n: u32, value: f32, gate: f32) -> f32 {
    var v = value;
    var g = gate;
    if ((p.flags & 1u) != 0u) {
        v += bias[n];
        g += bias[p.n + n];
    }
    var x = v * activation(ACT, g);
    if ((p.flags & 2u) != 0u) {
        x += residual[i];
    }
    return x;
}
