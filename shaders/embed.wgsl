// Embeddings.
//
// gather:      out[r, :] = table[ids[r mod id_rows], :] for r < rows; table [vocab, cols] f32,
//              ids u32 (id_rows = 0: every row has its own id).
//              Ids ≥ total read row total − 1 (the op checks host-side ids beforehand). A table
//              too big for one binding comes in row blocks: this dispatch's binding holds rows
//              first .. first + vocab of the whole table and writes only the rows whose ids fall
//              there (one dispatch per block fills the output).
// sinusoidal:  out[r, :] = timestep-style embedding of the scalar t = values[r]·scale:
//              half = cols / 2, f_j = exp(−ln(max_period)·j / (half − shift)),
//              [sin(t·f), cos(t·f)] or, with flip = 1, [cos(t·f), sin(t·f)];
//              an odd column count leaves the last column 0.

// struct Params: generated from the Rust declaration (ops::embed::Params, kernel_params!)
// and appended by shaders::Module::source.
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> ids: array<u32>;
@group(0) @binding(2) var<storage, read> table: array<f32>;
@group(0) @binding(3) var<storage, read> values: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;

const WG: u32 = 256u;

@compute @workgroup_size(256, 1, 1)
fn gather(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let i = (wid.x + wid.y * nwg.x) * WG + li;
    if (i >= p.rows * p.cols) {
        return;
    }
    let r = i / p.cols;
    let c = i % p.cols;
    let id_row = select(r, r % p.id_rows, p.id_rows != 0u);
    let id = min(ids[id_row], p.total - 1u);
    if (id < p.first || id - p.first >= p.vocab) {
        return;
    }
    out[i] = table[(id - p.first) * p.cols + c];
}

@compute @workgroup_size(256, 1, 1)
fn sinusoidal(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let i = (wid.x + wid.y * nwg.x) * WG + li;
    if (i >= p.rows * p.cols) {
        return;
    }
    let r = i / p.cols;
    let c = i % p.cols;
    let half_dim = p.cols / 2u;
    if (c >= 2u * half_dim) {
        out[i] = 0.0;
        return;
    }
    let j = c % half_dim;
    let first = c < half_dim;
    let freq = exp(-log(p.max_period) * f32(j) / (f32(half_dim) - p.shift));
    let arg = values[r] * p.scale * freq;
    // first half is sin unless flipped.
    let use_sin = first != (p.flip != 0u);
    out[i] = select(cos(arg), sin(arg), use_sin);
}
