//! Two writers, one folder: two `train` processes started into one `--out`. The second fails at
//! once naming the folder and the holder; the first finishes, and the folder holds its run
//! alone (one run.json, its checkpoints, a log of whole lines with each epoch once).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn experiment(dir: &Path) -> std::path::PathBuf {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/bad-inputs/files/blobs.csv");
    let config = dir.join("long.toml");
    // Long enough (a few seconds) for the second process to start while the first trains.
    let text = format!(
        "method = \"ce\"\ndataset = \"csv:{}\"\nstudent = \"mlp-16\"\nseeds = [0]\n\n[train]\nepochs = 400\nbatch_size = 8\noptimizer = {{ kind = \"sgd\", lr = 0.01 }}\n",
        data.display()
    );
    std::fs::write(&config, text).unwrap();
    config
}

#[test]
fn a_second_writer_into_a_run_folder_fails_at_once_naming_the_holder() {
    let tmp = tempfile::tempdir().unwrap();
    let config = experiment(tmp.path());
    let out = tmp.path().join("out");
    let train = || {
        let mut c = Command::new(env!("CARGO_BIN_EXE_xtask"));
        c.args(["train", "--config"]).arg(&config).arg("--out").arg(&out).stdout(Stdio::null()).stderr(Stdio::piped());
        c
    };
    let mut first = train().spawn().unwrap();
    // The first holds the lock once its lock file exists.
    let started = Instant::now();
    while !out.join(".kd-lock").exists() {
        assert!(started.elapsed() < Duration::from_secs(60), "the first writer never took the lock");
        assert!(first.try_wait().unwrap().is_none(), "the first writer ended before taking the lock");
        std::thread::sleep(Duration::from_millis(5));
    }
    let second = train().output().unwrap();
    let first_pid = first.id();
    let first = first.wait_with_output().unwrap();
    let second_err = String::from_utf8_lossy(&second.stderr);
    assert!(first.status.success(), "the first writer failed: {}", String::from_utf8_lossy(&first.stderr));
    assert!(!second.status.success(), "the second writer into {} exited 0", out.display());
    assert!(
        second_err.contains(&format!("{} is in use by another writer: process {first_pid} (train", out.display())),
        "the second writer's error names the folder and the holder: {second_err}"
    );
    // The folder holds the first run alone, its lock released.
    assert!(!out.join(".kd-lock").exists());
    let run = out.join("ce-mlp-16-seed0");
    for file in ["run.json", "last.ckpt", "best.ckpt"] {
        assert!(run.join(file).exists(), "{file} is missing");
    }
    let log = std::fs::read_to_string(run.join("log.jsonl")).unwrap();
    assert!(log.ends_with('\n'));
    let epochs: Vec<u64> =
        log.lines().map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap()["record"]["epoch"].as_u64().unwrap()).collect();
    assert_eq!(epochs, (1..=400).collect::<Vec<u64>>(), "each epoch once, in order");
    let leftovers: Vec<String> = std::fs::read_dir(&run)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "temporary or lock files left: {leftovers:?}");
}
