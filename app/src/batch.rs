//! `tessera batch PROMPTS --out DIR`: one image per entry of a prompt list, with the model
//! loaded once; resumable (existing outputs are skipped) and splittable into shards that run
//! as an array job (Kubernetes Indexed Jobs, Slurm job arrays; docs/scale-out.md).
//!
//! PROMPTS is a text file (one prompt a line) or JSON Lines (an object a line with `prompt`,
//! `negative_prompt`, `class`, `seed`, `steps`, `guidance`, `sampler`, `schedule`,
//! `choice_temperature`, `softmax_temperature`, `typical_mass`, `guidance_schedule`, and for
//! two-stage models `stages` and `sr_steps`; a field overrides the command line). Blank
//! lines are skipped; entries are numbered by line, so an edit elsewhere in the file never
//! renames an entry's output. Entry `n` (the file's line `n`, 1-based) writes `DIR/NNNNN.png`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Deserialize;
use tessera_engine::GpuContext;
use tessera_engine::pipeline;
use tessera_engine::sampling::{GuidanceSchedule, SamplerKind, Schedule};

use crate::files::{png_bytes, write_atomically};
use crate::render::{GenerationArgs, RenderArgs};

#[derive(Args, Clone)]
pub struct BatchArgs {
    /// The prompt list: a text file (one prompt a line) or JSON Lines (one object a line).
    #[arg(value_name = "PROMPTS")]
    pub prompts: PathBuf,
    /// Folder for the images (created if missing); entry n becomes NNNNN.png there.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Run only shard I of N (1-based), e.g. 2/8: the entries on lines n with n mod N = I − 1.
    /// Without it, a Kubernetes Indexed Job's JOB_COMPLETION_INDEX (with --shards N) or a
    /// Slurm job array's SLURM_ARRAY_TASK_ID/_MIN/_COUNT choose the shard.
    #[arg(long, value_name = "I/N")]
    pub shard: Option<String>,
    /// The number of shards, with JOB_COMPLETION_INDEX (Kubernetes Indexed Jobs).
    #[arg(long, value_name = "N")]
    pub shards: Option<usize>,
    #[command(flatten)]
    pub generation: GenerationArgs,
}

/// One JSON Lines entry: every field optional, overriding the command line.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Entry {
    prompt: Option<String>,
    negative_prompt: Option<String>,
    class: Option<u32>,
    seed: Option<u64>,
    steps: Option<usize>,
    guidance: Option<f32>,
    sampler: Option<String>,
    schedule: Option<String>,
    choice_temperature: Option<String>,
    softmax_temperature: Option<String>,
    typical_mass: Option<f32>,
    guidance_schedule: Option<String>,
    stages: Option<usize>,
    sr_steps: Option<usize>,
}

/// A job of the list: its line number (1-based) and its arguments.
struct Job {
    line: usize,
    args: RenderArgs,
}

/// The seed of the entry on `line` without one of its own: the base seed and the line
/// number mixed (SplitMix64), so neighbouring lines get unrelated seeds and every run of the
/// same list gives the same images.
pub fn entry_seed(base: u64, line: usize) -> u64 {
    let mut z = base ^ (line as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    (z ^ (z >> 31)) % 1_000_000_000
}

/// Reads the list into jobs, each checked as `--render` checks its options.
fn read_jobs(a: &BatchArgs) -> Result<Vec<Job>> {
    let text = std::fs::read_to_string(&a.prompts)
        .with_context(|| format!("reading {}", a.prompts.display()))?;
    let lines: Vec<(usize, &str)> = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim()))
        .filter(|(_, l)| !l.is_empty())
        .collect();
    if lines.is_empty() {
        bail!("{}: no prompts", a.prompts.display());
    }
    // JSON Lines when every entry is an object; else one prompt a line.
    let jsonl = lines.iter().all(|(_, l)| l.starts_with('{'));
    let base = a.generation.seed.unwrap_or(0);
    lines
        .into_iter()
        .map(|(line, l)| {
            let at = || format!("{}:{line}", a.prompts.display());
            let e: Entry = if jsonl {
                serde_json::from_str(l).with_context(at)?
            } else {
                Entry {
                    prompt: Some(l.to_owned()),
                    ..Entry::default()
                }
            };
            let mut g = a.generation.clone();
            if let Some(v) = e.prompt {
                g.prompt = v;
            }
            if let Some(v) = e.negative_prompt {
                g.negative_prompt = v;
            }
            if e.class.is_some() {
                g.class = e.class;
            }
            g.seed = Some(e.seed.unwrap_or_else(|| entry_seed(base, line)));
            g.steps = e.steps.or(g.steps);
            g.guidance = e.guidance.or(g.guidance);
            if let Some(v) = e.sampler {
                g.sampler = Some(
                    v.parse::<SamplerKind>()
                        .map_err(anyhow::Error::msg)
                        .with_context(at)?,
                );
            }
            if let Some(v) = e.schedule {
                g.schedule = Some(
                    v.parse::<Schedule>()
                        .map_err(anyhow::Error::msg)
                        .with_context(at)?,
                );
            }
            g.choice_temperature = e.choice_temperature.or(g.choice_temperature);
            g.softmax_temperature = e.softmax_temperature.or(g.softmax_temperature);
            g.typical_mass = e.typical_mass.or(g.typical_mass);
            g.stages = e.stages.or(g.stages);
            g.sr_steps = e.sr_steps.or(g.sr_steps);
            if let Some(v) = e.guidance_schedule {
                g.guidance_schedule = Some(
                    v.parse::<GuidanceSchedule>()
                        .map_err(anyhow::Error::msg)
                        .with_context(at)?,
                );
            }
            let args = RenderArgs {
                generation: g,
                batch: 1,
                ..RenderArgs::default()
            };
            crate::render::check_options(&args).with_context(at)?;
            Ok(Job { line, args })
        })
        .collect()
}

/// The shard to run, `(index, count)` with a 0-based index: `--shard I/N`, else the job
/// scheduler's variables, else the whole list `(0, 1)`.
pub fn shard(a: &BatchArgs, env: impl Fn(&str) -> Option<String>) -> Result<(usize, usize)> {
    let number = |name: &str, v: &str| -> Result<usize> {
        v.trim()
            .parse()
            .with_context(|| format!("{name}={v:?} is not a whole number"))
    };
    if let Some(s) = &a.shard {
        let (i, n) = s
            .split_once('/')
            .with_context(|| format!("--shard {s:?}: expected I/N, e.g. 2/8"))?;
        let (i, n) = (number("--shard", i)?, number("--shard", n)?);
        if n == 0 || i == 0 || i > n {
            bail!("--shard {s:?}: I must be from 1 to N");
        }
        return Ok((i - 1, n));
    }
    if let Some(v) = env("JOB_COMPLETION_INDEX") {
        let i = number("JOB_COMPLETION_INDEX", &v)?;
        let n = a.shards.context(
            "JOB_COMPLETION_INDEX is set (a Kubernetes Indexed Job): pass --shards N, the \
             job's completions",
        )?;
        if i >= n {
            bail!("JOB_COMPLETION_INDEX={i} is not below --shards {n}");
        }
        return Ok((i, n));
    }
    if let Some(v) = env("SLURM_ARRAY_TASK_ID") {
        let id = number("SLURM_ARRAY_TASK_ID", &v)?;
        let min = env("SLURM_ARRAY_TASK_MIN")
            .map(|m| number("SLURM_ARRAY_TASK_MIN", &m))
            .transpose()?
            .unwrap_or(0);
        let n = match env("SLURM_ARRAY_TASK_COUNT") {
            Some(c) => number("SLURM_ARRAY_TASK_COUNT", &c)?,
            None => a
                .shards
                .context("SLURM_ARRAY_TASK_COUNT is unset: pass --shards N")?,
        };
        let i = id
            .checked_sub(min)
            .filter(|&i| i < n)
            .with_context(|| format!("SLURM_ARRAY_TASK_ID={id} is not within {min}..{min}+{n}"))?;
        return Ok((i, n));
    }
    if a.shards.is_some() {
        bail!("--shards needs JOB_COMPLETION_INDEX (or use --shard I/N)");
    }
    Ok((0, 1))
}

/// `DIR/NNNNN.png` for the entry on `line` (zero-padded to five digits or the list's width).
fn output_for(dir: &Path, line: usize, last_line: usize) -> PathBuf {
    let width = last_line.to_string().len().max(5);
    dir.join(format!("{line:0width$}.png"))
}

pub fn run(a: &BatchArgs) -> Result<()> {
    let (index, count) = shard(a, |k| std::env::var(k).ok())?;
    let jobs = read_jobs(a)?;
    let last_line = jobs.last().map_or(1, |j| j.line);
    let mine: Vec<&Job> = jobs.iter().filter(|j| j.line % count == index).collect();
    let todo: Vec<&Job> = mine
        .iter()
        .copied()
        .filter(|j| !output_for(&a.out, j.line, last_line).exists())
        .collect();
    eprintln!(
        "{} entries, shard {}/{count}: {} to make, {} already there",
        jobs.len(),
        index + 1,
        todo.len(),
        mine.len() - todo.len()
    );
    if todo.is_empty() {
        return Ok(());
    }
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let ctx = GpuContext::new()?;
    let model = crate::render::open_model(&ctx, a.generation.model.as_deref())?;
    // Every entry is planned (images read, the model's rules checked) before any work.
    let plans = todo
        .iter()
        .map(|j| {
            crate::render::plan(&j.args, &model)
                .with_context(|| format!("{}:{}", a.prompts.display(), j.line))
        })
        .collect::<Result<Vec<_>>>()?;
    let bar = ProgressBar::new(todo.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} images {msg}")
            .map_err(|e| anyhow::anyhow!("{e}"))?,
    );
    for (job, plan) in todo.iter().zip(&plans) {
        let req = crate::render::request(&job.args, &model, plan);
        let generated = pipeline::generate(&ctx, &model, &req, &mut |_| {
            std::ops::ControlFlow::Continue(())
        })
        .with_context(|| format!("{}:{}", a.prompts.display(), job.line))?;
        let (image, (w, h)) = model.decode(&ctx, &generated.tokens, 1, generated.grid)?;
        let text = crate::render::settings_text(&job.args, &model, plan, &req, (w, h), 0);
        let path = output_for(&a.out, job.line, last_line);
        write_atomically(&path, &png_bytes(&image, w, h, &text)?)?;
        bar.inc(1);
        bar.set_message(path.display().to_string());
    }
    bar.finish_and_clear();
    if let Some(line) = crate::render::tuning_line(&ctx) {
        eprintln!("{line}");
    }
    eprintln!("wrote {} images to {}", todo.len(), a.out.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(shard: Option<&str>, shards: Option<usize>) -> BatchArgs {
        BatchArgs {
            prompts: "p.txt".into(),
            out: "out".into(),
            shard: shard.map(str::to_owned),
            shards,
            generation: GenerationArgs::default(),
        }
    }

    #[test]
    fn shards_from_flags_and_job_schedulers() {
        let none = |_: &str| None;
        assert_eq!(shard(&args(None, None), none).expect("whole"), (0, 1));
        assert_eq!(shard(&args(Some("2/8"), None), none).expect("flag"), (1, 8));
        for bad in ["0/3", "4/3", "x/3", "3"] {
            assert!(shard(&args(Some(bad), None), none).is_err(), "{bad}");
        }
        let k8s = |k: &str| (k == "JOB_COMPLETION_INDEX").then(|| "3".to_owned());
        assert_eq!(shard(&args(None, Some(4)), k8s).expect("k8s"), (3, 4));
        assert!(shard(&args(None, None), k8s).is_err(), "needs --shards");
        assert!(
            shard(&args(None, Some(3)), k8s).is_err(),
            "index past the count"
        );
        let slurm = |k: &str| match k {
            "SLURM_ARRAY_TASK_ID" => Some("12".to_owned()),
            "SLURM_ARRAY_TASK_MIN" => Some("10".to_owned()),
            "SLURM_ARRAY_TASK_COUNT" => Some("5".to_owned()),
            _ => None,
        };
        assert_eq!(shard(&args(None, None), slurm).expect("slurm"), (2, 5));
        // The flag wins over the environment.
        assert_eq!(
            shard(&args(Some("1/2"), None), slurm).expect("flag"),
            (0, 2)
        );
    }

    #[test]
    fn entry_seeds_are_fixed_and_differ_by_line() {
        assert_eq!(entry_seed(0, 1), entry_seed(0, 1));
        let seeds: std::collections::HashSet<u64> = (1..200).map(|l| entry_seed(7, l)).collect();
        assert_eq!(seeds.len(), 199);
        assert_ne!(entry_seed(0, 3), entry_seed(1, 3));
    }
}
