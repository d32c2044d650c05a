//! Synthetic checkpoints in the exact layout of the released files: every array path and shape
//! for a configuration, filled with seeded random values. Benchmarks and tests run the
//! published sizes with them, without the downloads.

use super::{MaskGit, transformer, vqgan};
use crate::error::Result;
use crate::gpu::GpuContext;
use crate::io::Checkpoint;
use crate::io::flax::FlaxFile;

/// Every array path and shape of a MaskGIT transformer checkpoint.
pub fn transformer_layout(c: &transformer::Config) -> Vec<(String, Vec<usize>)> {
    let (d, h, hd, m, v) = (
        c.hidden_size,
        c.num_heads,
        c.head_dim,
        c.intermediate_size,
        c.vocab_size,
    );
    let mut out = vec![
        ("Embed_0/word_embeddings/embedding".to_owned(), vec![v, d]),
        (
            "Embed_0/position_embeddings/embedding".to_owned(),
            vec![c.max_positions, d],
        ),
        ("MlmLayer_0/mlm_dense/kernel".to_owned(), vec![d, d]),
        ("MlmLayer_0/mlm_dense/bias".to_owned(), vec![d]),
        ("MlmLayer_0/mlm_bias/bias".to_owned(), vec![v]),
    ];
    let ln = |p: &str| {
        [
            (format!("{p}/scale"), vec![d]),
            (format!("{p}/bias"), vec![d]),
        ]
    };
    out.extend(ln("Embed_0/embeddings_ln"));
    out.extend(ln("MlmLayer_0/mlm_ln"));
    for i in 0..c.num_layers {
        let a = format!("TransformerLayer_{i}/Attention_0");
        for n in ["query", "key", "value"] {
            out.push((format!("{a}/self_attention/{n}/kernel"), vec![d, h, hd]));
            out.push((format!("{a}/self_attention/{n}/bias"), vec![h, hd]));
        }
        out.push((format!("{a}/self_attention/out/kernel"), vec![h, hd, d]));
        out.push((format!("{a}/self_attention/out/bias"), vec![d]));
        out.extend(ln(&format!("{a}/attention_output_ln")));
        let p = format!("TransformerLayer_{i}/Mlp_0");
        out.push((format!("{p}/intermediate_output/kernel"), vec![d, m]));
        out.push((format!("{p}/intermediate_output/bias"), vec![m]));
        out.push((format!("{p}/layer_output/kernel"), vec![m, d]));
        out.push((format!("{p}/layer_output/bias"), vec![d]));
        out.extend(ln(&format!("{p}/layer_output_ln")));
    }
    out
}

/// Every array path and shape of a MaskGIT VQGAN checkpoint.
pub fn vqgan_layout(c: &vqgan::Config) -> Vec<(String, Vec<usize>)> {
    let mut out = vec![(
        "quantizer/codebook".to_owned(),
        vec![c.codebook_size, c.embedding_dim],
    )];
    let gn = |out: &mut Vec<(String, Vec<usize>)>, p: String, ch: usize| {
        out.push((format!("{p}/scale"), vec![ch]));
        out.push((format!("{p}/bias"), vec![ch]));
    };
    let block = |out: &mut Vec<(String, Vec<usize>)>, p: String, cin: usize, cout: usize| {
        gn(out, format!("{p}/GroupNorm_0"), cin);
        gn(out, format!("{p}/GroupNorm_1"), cout);
        out.push((format!("{p}/Conv_0/kernel"), vec![3, 3, cin, cout]));
        out.push((format!("{p}/Conv_1/kernel"), vec![3, 3, cout, cout]));
        if cin != cout {
            out.push((format!("{p}/Conv_2/kernel"), vec![1, 1, cout, cout]));
        }
    };
    let (ch, nrb, emb) = (&c.channels, c.num_res_blocks, c.embedding_dim);
    let top = ch[ch.len() - 1];
    // Encoder.
    out.push((
        "encoder/Conv_0/kernel".into(),
        vec![3, 3, c.in_channels, c.filters],
    ));
    let (mut r, mut prev) = (0, c.filters);
    for &level in ch.iter().chain(std::iter::once(&top)) {
        for _ in 0..nrb {
            block(&mut out, format!("encoder/ResBlock_{r}"), prev, level);
            (r, prev) = (r + 1, level);
        }
    }
    gn(&mut out, "encoder/GroupNorm_0".into(), top);
    out.push(("encoder/Conv_1/kernel".into(), vec![1, 1, top, emb]));
    out.push(("encoder/Conv_1/bias".into(), vec![emb]));
    // Decoder.
    out.push(("decoder/Conv_0/kernel".into(), vec![3, 3, emb, top]));
    out.push(("decoder/Conv_0/bias".into(), vec![top]));
    let (mut r, mut conv, mut prev) = (0, 1, top);
    for (i, &level) in std::iter::once((ch.len(), &top)).chain(ch.iter().enumerate().rev()) {
        for _ in 0..nrb {
            block(&mut out, format!("decoder/ResBlock_{r}"), prev, level);
            (r, prev) = (r + 1, level);
        }
        if i > 0 && i < ch.len() {
            out.push((
                format!("decoder/Conv_{conv}/kernel"),
                vec![3, 3, level, level],
            ));
            out.push((format!("decoder/Conv_{conv}/bias"), vec![level]));
            conv += 1;
        }
    }
    gn(&mut out, "decoder/GroupNorm_0".into(), ch[0]);
    out.push((
        format!("decoder/Conv_{conv}/kernel"),
        vec![3, 3, ch[0], c.out_channels],
    ));
    out.push((format!("decoder/Conv_{conv}/bias"), vec![c.out_channels]));
    out
}

/// A Flax file holding `layout` with the seeded random values of [`Checkpoint::synthetic`]
/// (asked under dotted names, so biases come out small).
pub fn synthetic_file(
    source: &str,
    layout: Vec<(String, Vec<usize>)>,
    seed: u64,
) -> Result<FlaxFile> {
    let values = Checkpoint::synthetic(seed);
    FlaxFile::from_tensors(
        source,
        layout.into_iter().map(|(name, shape)| {
            // Synthetic checkpoints answer every request.
            let data = values
                .f32(&name.replace('/', "."), &shape)
                .unwrap_or_default();
            (format!("params/{name}"), shape, data)
        }),
    )
}

impl MaskGit {
    /// The model at the given sizes with seeded random weights (e.g. ImageNet-256:
    /// `transformer::Config::imagenet_256()`, `vqgan::Config::imagenet()`).
    pub fn synthetic(
        ctx: &GpuContext,
        tc: &transformer::Config,
        vc: &vqgan::Config,
        seed: u64,
    ) -> Result<Self> {
        let t = synthetic_file(
            "<synthetic maskgit checkpoint>",
            transformer_layout(tc),
            seed,
        )?;
        let v = synthetic_file("<synthetic tokenizer checkpoint>", vqgan_layout(vc), seed)?;
        Self::from_flax(ctx, &t, &v)
    }
}
