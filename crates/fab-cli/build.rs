//! Records the git commit the `fab` binary is built from (`FAB_GIT_COMMIT`), so that every run
//! directory can name the exact source that produced it. Outside a git checkout (e.g. a crates.io
//! download) the commit is `unknown`.

use std::process::Command;

fn main() {
    let commit = Command::new("git")
        .args(["describe", "--always", "--dirty", "--abbrev=12", "--exclude", "*"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=FAB_GIT_COMMIT={commit}");
    // Rebuild when HEAD moves or the working tree's index changes (commits, checkouts, staging).
    if let Ok(out) = Command::new("git").args(["rev-parse", "--git-dir"]).output() {
        if out.status.success() {
            let dir = String::from_utf8_lossy(&out.stdout).trim().to_string();
            for f in ["HEAD", "index"] {
                println!("cargo:rerun-if-changed={dir}/{f}");
            }
        }
    }
    println!("cargo:rerun-if-changed=build.rs");
}
