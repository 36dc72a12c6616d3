//! The `fab` binary names the source it was built from: `fab --version` and every run
//! directory's `invocations.jsonl` carry its git commit.

use std::process::Command;

#[test]
fn runs_record_the_git_commit_of_the_binary() {
    let fab = env!("CARGO_BIN_EXE_fab");
    let head = Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    let version = Command::new(fab).arg("--version").output().unwrap();
    let version = String::from_utf8_lossy(&version.stdout).to_string();
    let out = fab_core::test_utils::ScratchDir::new("provenance");
    let status = Command::new(fab)
        .args(["train", "gmm-quick", "--set", "train.n_iterations=2", "--set", "eval.final_batch_size=200", "--set", "eval.plots=false"])
        .arg("--out")
        .arg(out.as_os_str())
        .output()
        .unwrap();
    assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stderr));
    let inv = std::fs::read_to_string(out.join("invocations.jsonl")).unwrap();
    let line: serde_json::Value = serde_json::from_str(inv.lines().next().unwrap()).unwrap();
    let commit = line["git_commit"].as_str().expect("git_commit recorded").to_string();
    assert!(version.contains(&commit), "{version} vs {commit}");
    match head {
        // In a checkout the commit is HEAD's (abbreviated, `-dirty` with local changes).
        Some(h) => assert!(h.starts_with(commit.trim_end_matches("-dirty")) && commit.len() >= 12, "{commit} vs HEAD {h}"),
        None => assert_eq!(commit, "unknown"),
    }
    assert_eq!(line["command"][1], "train");
}
