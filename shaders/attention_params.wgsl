// The Params every attention kernel reads (prepended to attention.wgsl, attention_rows.wgsl,
// attention_flash.wgsl and attention_coop.wgsl; mirrored by ops::attention::Params). Strides and offsets are in
// f32 elements; q/k/v_offset select the columns of a fused projection.

struct Params {
    batch: u32,
    heads: u32,
    lq: u32,
    lk: u32,
    head_dim: u32,
    q_stride: u32,
    k_stride: u32,
    v_stride: u32,
    o_stride: u32,
    q_offset: u32,
    k_offset: u32,
    v_offset: u32,
    q_batch_stride: u32,
    k_batch_stride: u32,
    v_batch_stride: u32,
    o_batch_stride: u32,
    scale: f32,
    causal: u32,
    _pad0: u32,
    _pad1: u32,
}
