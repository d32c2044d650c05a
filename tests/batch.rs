//! `tessera batch`: one PNG per prompt-list entry with its settings, resumable, and split into
//! shards (flag, Kubernetes Indexed Job, Slurm array) that together make exactly the unsharded
//! set, byte for byte.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

fn model() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/amused/tiny-b/model")
}

/// Runs `tessera batch LIST --out DIR` on the tiny model with `extra` arguments and `env`.
fn batch(list: &Path, out: &Path, extra: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tessera"));
    cmd.args([
        "batch",
        s(list),
        "--out",
        s(out),
        "--model",
        s(&model()),
        "--steps",
        "2",
    ])
    .args(extra)
    .env("RUST_LOG", "error")
    .env_remove("JOB_COMPLETION_INDEX")
    .env_remove("SLURM_ARRAY_TASK_ID");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let o = cmd.output().expect("run tessera");
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// The folder's files and their bytes.
fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.map(|e| {
                let e = e.expect("entry");
                (
                    e.file_name().to_string_lossy().into_owned(),
                    std::fs::read(e.path()).expect("read"),
                )
            })
            .collect()
        })
        .unwrap_or_default()
}

fn parameters(png: &Path) -> String {
    tessera::files::png_parameters(png).expect("parameters")
}

#[test]
fn a_prompt_list_makes_one_image_per_line_resumes_and_shards_exactly() {
    let dir = tmp("batch");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let list = dir.join("prompts.txt");
    std::fs::write(&list, "blue heart\n\nred apple\ngreen apple\nblue heart\n").expect("list");
    let all = dir.join("all");
    let (ok, err) = batch(&list, &all, &[], &[]);
    assert!(ok, "{err}");
    let made = files(&all);
    let names: Vec<&str> = made.keys().map(String::as_str).collect();
    assert_eq!(names, ["00001.png", "00003.png", "00004.png", "00005.png"]);
    let p1 = parameters(&all.join("00001.png"));
    assert!(p1.starts_with("blue heart\n"), "{p1}");
    // Same prompt on another line: its own seed, so another image.
    let p5 = parameters(&all.join("00005.png"));
    assert_ne!(p1, p5);
    assert_ne!(made["00001.png"], made["00005.png"]);

    // A second run makes nothing; a lost output is made again, identical.
    let (ok, err) = batch(&list, &all, &[], &[]);
    assert!(ok && err.contains("0 to make"), "{err}");
    std::fs::remove_file(all.join("00004.png")).expect("remove");
    let (ok, err) = batch(&list, &all, &[], &[]);
    assert!(ok && err.contains("1 to make"), "{err}");
    assert_eq!(files(&all), made, "resumed set differs");

    // Shards from the flag, a Kubernetes Indexed Job and a Slurm array: the same set.
    let by_flag = dir.join("flag");
    for i in ["1/3", "2/3", "3/3"] {
        let (ok, err) = batch(&list, &by_flag, &["--shard", i], &[]);
        assert!(ok, "{i}: {err}");
    }
    assert_eq!(files(&by_flag), made, "--shard");
    let by_k8s = dir.join("k8s");
    for i in ["0", "1"] {
        let (ok, err) = batch(
            &list,
            &by_k8s,
            &["--shards", "2"],
            &[("JOB_COMPLETION_INDEX", i)],
        );
        assert!(ok, "{i}: {err}");
    }
    assert_eq!(files(&by_k8s), made, "JOB_COMPLETION_INDEX");
    let by_slurm = dir.join("slurm");
    for i in ["4", "5", "6", "7"] {
        let env = [
            ("SLURM_ARRAY_TASK_ID", i),
            ("SLURM_ARRAY_TASK_MIN", "4"),
            ("SLURM_ARRAY_TASK_COUNT", "4"),
        ];
        let (ok, err) = batch(&list, &by_slurm, &[], &env);
        assert!(ok, "{i}: {err}");
    }
    assert_eq!(files(&by_slurm), made, "SLURM_ARRAY_TASK_ID");
}

#[test]
fn json_lines_override_the_command_line_and_bad_lines_stop_before_work() {
    let dir = tmp("batch-jsonl");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let list = dir.join("list.jsonl");
    std::fs::write(
        &list,
        "{\"prompt\": \"cat face\", \"seed\": 11, \"guidance\": 2}\n{\"prompt\": \"dog\", \"steps\": 3}\n",
    )
    .expect("list");
    let out = dir.join("out");
    let (ok, err) = batch(&list, &out, &["--guidance", "4"], &[]);
    assert!(ok, "{err}");
    let first = parameters(&out.join("00001.png"));
    assert!(
        first.starts_with("cat face\n") && first.contains("Seed: 11"),
        "{first}"
    );
    assert!(first.contains("CFG scale: 2"), "{first}");
    let second = parameters(&out.join("00002.png"));
    assert!(
        second.contains("Steps: 3") && second.contains("CFG scale: 4"),
        "{second}"
    );

    for (body, expect) in [
        (
            "{\"prompt\": \"a\"}\n{\"prompt\": \"b\", \"bogus\": 1}\n",
            ":2",
        ),
        ("{\"prompt\": \"a\", \"steps\": 0}\n", "--steps"),
        (
            "{\"prompt\": \"a\", \"sampler\": \"nope\"}\n",
            "unknown sampler",
        ),
        ("\n\n", "no prompts"),
    ] {
        std::fs::write(&list, body).expect("list");
        let bad = dir.join("bad");
        let (ok, err) = batch(&list, &bad, &[], &[]);
        assert!(!ok, "{body:?} was accepted");
        let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("Error:")).collect();
        assert_eq!(errors.len(), 1, "{err}");
        assert!(errors[0].contains(expect), "{body:?}: {err}");
        assert!(!bad.exists(), "{body:?}: wrote {bad:?}");
    }
    let (ok, err) = batch(&list, &dir.join("x"), &["--shard", "3/2"], &[]);
    assert!(!ok && err.contains("--shard"), "{err}");
}

/// A batch that times kernels (the GPU kernel family forced, tuning kept in memory) says so on
/// one line before its summary, as `--render` does; with tuning off it does not.
#[test]
fn a_batch_that_times_kernels_says_so() {
    let dir = tmp("batch-tuning");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let list = dir.join("prompts.txt");
    std::fs::write(&list, "blue heart\n").expect("list");
    for (tune, says) in [("memory", true), ("0", false)] {
        let out = dir.join(tune);
        let env = [("TESSERA_KERNELS", "tiled"), ("TESSERA_TUNE", tune)];
        let (ok, err) = batch(&list, &out, &[], &env);
        assert!(ok, "TESSERA_TUNE={tune}: {err}");
        assert_eq!(
            err.lines().any(|l| l.starts_with("timed the kernels of")),
            says,
            "TESSERA_TUNE={tune}: {err}"
        );
    }
}
