//! `tessera`: masked generative image transformers on any GPU.

mod bench;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "tessera", version, about, max_term_width = 100)]
#[command(help_expected = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Print the GPU adapter tessera would use, its backend, features and limits.
    Info,
    /// Measure kernel speed on this machine's adapter.
    Bench(bench::BenchArgs),
}

fn run() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Info) => info(),
        Some(Command::Bench(args)) => bench::run(&args),
        None => {
            use clap::CommandFactory;
            Cli::command().print_help()?;
            Ok(())
        }
    }
}

fn info() -> Result<()> {
    let ctx = tessera_engine::GpuContext::new()?;
    let i = &ctx.info;
    let l = ctx.limits();
    println!("adapter: {} ({:?}, {:?})", i.name, i.backend, i.device_type);
    println!("driver: {} {}", i.driver, i.driver_info);
    println!(
        "features: {:?}",
        ctx.features() & tessera_engine::gpu::WANTED_FEATURES
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

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    if let Err(e) = run() {
        eprintln!("Error: {e:#}");
        std::process::exit(1);
    }
}
