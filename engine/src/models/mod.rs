//! Model families. Struct fields and loader paths mirror the reference checkpoints' module paths,
//! so a weight name greps to its use.

pub mod amused;
pub mod clip_text;
pub mod clip_tokenizer;
pub mod maskgit;
pub mod nn;
pub mod paella;
pub mod t5;
