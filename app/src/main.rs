//! `tessera`: masked generative image transformers on any GPU.

mod batch;
mod bench;
mod inspect;

use tessera::{files, gui, render};

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "tessera", version, about, max_term_width = 100)]
#[command(help_expected = true)]
#[command(args_conflicts_with_subcommands = true)]
// `--guidance -5` is a value, not a flag (tessera's own checks then say which values are legal).
#[command(allow_negative_numbers = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    render: render::RenderArgs,
    #[command(flatten)]
    screenshot: gui::ScreenshotArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Print the GPU adapter tessera would use, its backend, features and limits.
    Info,
    /// Measure kernel speed on this machine's adapter.
    Bench(bench::BenchArgs),
    /// Tokenize and encode a prompt with the model's text encoder.
    EmbedText(inspect::EmbedTextArgs),
    /// Run the transformer once on given tokens (conditional logits, no guidance).
    Forward(inspect::ForwardArgs),
    /// Decode codebook tokens to an image with the model's VQ decoder.
    Decode(inspect::DecodeArgs),
    /// Encode an image to codebook tokens with the model's VQ encoder.
    Encode(inspect::EncodeArgs),
    /// Convert a PyTorch checkpoint (.pt/.bin/.ckpt) to safetensors.
    Convert(inspect::ConvertArgs),
    /// One image per entry of a prompt list (text or JSON Lines), resumable and shardable
    /// across a job array (docs/scale-out.md).
    #[command(allow_negative_numbers = true)]
    Batch(Box<batch::BatchArgs>),
}

fn run() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Info) => info(),
        Some(Command::Bench(args)) => bench::run(&args),
        Some(Command::EmbedText(a)) => inspect::embed_text(&a),
        Some(Command::Forward(a)) => inspect::forward(&a),
        Some(Command::Decode(a)) => inspect::decode(&a),
        Some(Command::Encode(a)) => inspect::encode(&a),
        Some(Command::Batch(a)) => batch::run(&a),
        Some(Command::Convert(a)) => inspect::convert(&a),
        None => match &cli.render.render {
            Some(out) => render::run(&cli.render, out),
            None => gui::run(&cli.render, &cli.screenshot),
        },
    }
}

fn info() -> Result<()> {
    let ctx = tessera_engine::GpuContext::new()?;
    let i = &ctx.info;
    if tessera_engine::gpu::is_software_adapter(i) {
        println!(
            "GPU: none in use — {} is a software adapter running on the CPU: results are \
             correct but slow; install your GPU's Vulkan, Metal or DX12 driver for speed",
            i.name
        );
    } else {
        println!("GPU: a hardware adapter — tessera runs its GPU kernels at full speed");
    }
    let l = ctx.limits();
    println!("adapter: {} ({:?}, {:?})", i.name, i.backend, i.device_type);
    println!("driver: {} {}", i.driver, i.driver_info);
    println!(
        "features: {:?}",
        ctx.features()
            & (tessera_engine::gpu::WANTED_FEATURES | tessera_engine::gpu::COOPERATIVE_FEATURES)
    );
    // Where the adapter reports a range (Metal: 4–64), what the compute kernels really get.
    let measured = if i.subgroup_min_size == i.subgroup_max_size {
        String::new()
    } else {
        match ctx.measure_subgroup_width() {
            Ok(Some(width)) => format!(" ({width} measured)"),
            Ok(None) => " (widths differ within a workgroup)".to_owned(),
            Err(e) => format!(" (not measured: {e})"),
        }
    };
    println!(
        "subgroup size: {}–{}{measured}",
        i.subgroup_min_size, i.subgroup_max_size
    );
    let configs = ctx.cooperative_matrix_configs();
    if configs.is_empty() {
        println!("cooperative matrices: none");
    }
    for c in configs {
        println!(
            "cooperative matrix: {}×{}×{} {:?} × {:?} → {:?}{}",
            c.m_size,
            c.n_size,
            c.k_size,
            c.ab_type,
            c.ab_type,
            c.cr_type,
            if c.saturating_accumulation {
                " (saturating)"
            } else {
                ""
            }
        );
    }
    println!(
        "kernels: {:?} family, tensor-core kernels {}",
        ctx.kernel_family(),
        match ctx.cooperative_matrix() {
            Some(shape) if ctx.kernel_family() == tessera_engine::gpu::KernelFamily::Tiled => {
                format!("on ({shape})")
            }
            Some(shape) => format!("available ({shape}) but not chosen for this family"),
            None => "off".to_owned(),
        }
    );
    let tuner = ctx.tuner();
    println!(
        "kernel tuning: {}",
        match (tuner.is_on(), tuner.file()) {
            (false, _) => "off (the static choices; TESSERA_TUNE=1 turns it on)".to_owned(),
            (true, Some(file)) => format!(
                "on, {} choices measured so far in {}",
                tuner.stats().loaded,
                file.display()
            ),
            (true, None) => "on, for this process only".to_owned(),
        }
    );
    println!(
        "max_storage_buffer_binding_size: {} B, max_buffer_size: {} B, workgroup storage: {} B",
        l.max_storage_buffer_binding_size, l.max_buffer_size, l.max_compute_workgroup_storage_size
    );
    if tessera_engine::gpu::is_software_adapter(i) {
        println!("note: this adapter runs on the CPU (software rasterizer): correct but slow");
    }
    Ok(())
}

/// Headless Linux: without XDG_RUNTIME_DIR, the Vulkan driver's Wayland probe prints an
/// "error:" line to stderr on every start, although compute needs no display. Point it at the
/// temp dir so the probe fails quietly.
fn quiet_headless_wsi_probe() {
    if cfg!(target_os = "linux") && std::env::var_os("XDG_RUNTIME_DIR").is_none() {
        // SAFETY: called first thing in `main`, before any other thread exists, so nothing can
        // read the environment concurrently.
        #[allow(unsafe_code)]
        unsafe {
            std::env::set_var("XDG_RUNTIME_DIR", std::env::temp_dir());
        }
    }
}

fn main() {
    quiet_headless_wsi_probe();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    if let Err(e) = run() {
        eprintln!("Error: {e:#}");
        std::process::exit(1);
    }
}
