//! Every kernel against a plain CPU reference on random inputs, including sizes that are not
//! multiples of the tile and batch > 1. Runs on whatever adapter `GpuContext::new` picks
//! (lavapipe in CI).

mod common;

mod attention;
mod conv;
mod elementwise;
mod embed;
mod layout;
mod matmul;
mod norm;
mod runtime;
mod sampling;
mod tuning;
