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
    // The paths are relative to this package where git can say so: cargo resolves relative paths
    // against the package being built, so a fresh clone sharing a target directory with an older
    // one watches its own `.git` (newer than the last build) instead of the old clone's.
    if let Some(dir) = git_dir(&["rev-parse", "--path-format=relative", "--git-dir"]).or_else(|| git_dir(&["rev-parse", "--git-dir"])) {
        for f in ["HEAD", "index"] {
            println!("cargo:rerun-if-changed={dir}/{f}");
        }
    }
    println!("cargo:rerun-if-changed=build.rs");
}

/// The git directory as `git` prints it for `args`, if a `HEAD` file is there (older gits print
/// an unknown option back instead of failing).
fn git_dir(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok().filter(|o| o.status.success())?;
    let dir = String::from_utf8_lossy(&out.stdout).trim().to_string();
    std::path::Path::new(&dir).join("HEAD").is_file().then_some(dir)
}
