// Activation functions shared by elementwise.wgsl (unary ops, GEGLU) and the matmul kernels'
// epilogues. Codes (the same in Rust): 0 identity, 1 GELU exact (erf), 2 GELU tanh
// approximation, 3 quick-GELU x·σ(1.702x), 4 SiLU.

// erf with |error| < 1.2e-7 (W. J. Cody-style rational fit by Numerical Recipes' erfc).
fn erf_approx(x: f32) -> f32 {
    let z = abs(x);
    let t = 1.0 / (1.0 + 0.5 * z);
    let r = t * exp(-z * z - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418
        + t * (-0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587
        + t * (-0.82215223 + t * 0.17087277)))))))));
    return select(r - 1.0, 1.0 - r, x >= 0.0);
}

fn gelu_erf(x: f32) -> f32 {
    return 0.5 * x * (1.0 + erf_approx(x * 0.70710678118654752));
}

fn gelu_tanh(x: f32) -> f32 {
    let inner = clamp(0.79788456080286536 * (x + 0.044715 * x * x * x), -15.0, 15.0);
    return 0.5 * x * (1.0 + tanh(inner));
}

fn sigmoid(x: f32) -> f32 {
    return 1.0 / (1.0 + exp(-x));
}

fn activation(code: u32, x: f32) -> f32 {
    switch code {
        case 1u: { return gelu_erf(x); }
        case 2u: { return gelu_tanh(x); }
        case 3u: { return x * sigmoid(1.702 * x); }
        case 4u: { return x * sigmoid(x); }
        default: { return x; }
    }
}
