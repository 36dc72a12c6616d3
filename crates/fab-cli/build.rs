//! Records the git commit the `fab` binary is built from (`FAB_GIT_COMMIT`), so that every run
//! directory can name the exact source that produced it. Outside a git checkout (e.g. a crates.io
//! download) the commit is `unknown`.

use std::process::Command;

fn main() {
    let commit = git(&["describe", "--always", "--dirty", "--abbrev=12", "--exclude", "*"]).unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=FAB_GIT_COMMIT={commit}");
    // Rebuild when HEAD moves or the working tree's index changes (commits, checkouts, staging).
    // The paths are relative to this package where git can say so: cargo resolves relative paths
    // against the package being built, so a fresh clone sharing a target directory with an older
    // one watches its own `.git` (newer than the last build) instead of the old clone's. Older
    // gits print the unknown option back instead of failing, hence the check for `HEAD`.
    let has_head = |dir: &String| std::path::Path::new(dir).join("HEAD").is_file();
    if let Some(dir) = git(&["rev-parse", "--path-format=relative", "--git-dir"])
        .filter(has_head)
        .or_else(|| git(&["rev-parse", "--git-dir"]).filter(has_head))
    {
        for f in ["HEAD", "index"] {
            println!("cargo:rerun-if-changed={dir}/{f}");
        }
    }
    println!("cargo:rerun-if-changed=build.rs");
}

/// What `git args` prints, trimmed, when it succeeds with non-empty output.
fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok().filter(|o| o.status.success())?;
    let text = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (!text.is_empty()).then_some(text)
}
