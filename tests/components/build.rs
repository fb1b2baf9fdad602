//! Builds the Wasm components that ferrymq's tests and benchmarks load (the example plugins in
//! `plugins/` and the fixtures in `tests/plugins/`, each its own wasm32-wasip2 workspace) and writes
//! where they are into `$OUT_DIR/components.rs`.
//!
//! Each workspace is built the way `scripts/test.sh` builds it: `cargo build --locked --release
//! --target wasm32-wasip2 --workspace` in its own directory, so into its own `target/` and with the
//! flags of its own `.cargo/config.toml`. After that script the nested builds are no-ops. The
//! variables through which this (outer) build would hand its own flags, target directory, target,
//! profile settings or wrapper down to them are removed; the jobserver (`CARGO_MAKEFLAGS`) is kept,
//! so the nested builds take their job slots from this build's. They wait on no lock this build
//! holds: their target directories are their own, and cargo holds the package cache lock only while
//! it resolves and downloads, never while it compiles.
//!
//! The components are copied into `$OUT_DIR`, so cleaning a plugin workspace does not take them away
//! from tests already built.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::{env, fs};

const TARGET: &str = "wasm32-wasip2";
/// The guest workspaces, relative to the repository root.
const WORKSPACES: [&str; 2] = ["plugins", "tests/plugins"];
/// What every guest workspace builds on, relative to the repository root.
const SHARED_SOURCES: [&str; 2] = ["sdk/rust", "wit"];

/// Why the components could not be built: a message for cargo to print, and whether the nested
/// build's own output (on this script's stderr) says more.
struct Failure {
    message: String,
    show_output: bool,
}

impl From<String> for Failure {
    fn from(message: String) -> Self {
        Failure { message, show_output: false }
    }
}

impl From<&str> for Failure {
    fn from(message: &str) -> Self {
        Failure::from(message.to_owned())
    }
}

fn main() -> ExitCode {
    match build() {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            println!("cargo::error={}", failure.message);
            // An error logged by a script that succeeded fails the build with that one line; a
            // script that failed also has cargo print its output, the nested compiler errors.
            if failure.show_output { ExitCode::FAILURE } else { ExitCode::SUCCESS }
        }
    }
}

fn build() -> Result<(), Failure> {
    let manifest_dir = env::var_os("CARGO_MANIFEST_DIR").ok_or("CARGO_MANIFEST_DIR is not set")?;
    let root = Path::new(&manifest_dir).join("../..");
    let root = root.canonicalize().map_err(|e| format!("{}: {e}", root.display()))?;
    for dir in WORKSPACES.iter().chain(&SHARED_SOURCES) {
        watch(&root.join(dir))?;
    }
    check_target_installed()?;

    let out_dir = PathBuf::from(env::var_os("OUT_DIR").ok_or("OUT_DIR is not set")?);
    let copies = out_dir.join("components");
    fs::create_dir_all(&copies).map_err(|e| format!("create {}: {e}", copies.display()))?;
    let mut components: BTreeMap<String, PathBuf> = BTreeMap::new();
    for workspace in WORKSPACES {
        for artifact in build_workspace(&root.join(workspace), workspace)? {
            let (Some(file), Some(name)) = (artifact.file_name(), artifact.file_stem().and_then(OsStr::to_str)) else {
                return Err(format!("cargo reported an artifact without a name: {}", artifact.display()).into());
            };
            let copy = copies.join(file);
            fs::copy(&artifact, &copy).map_err(|e| format!("copy {}: {e}", artifact.display()))?;
            if components.insert(name.to_owned(), copy).is_some() {
                return Err(format!("two plugin crates build a component named {name}; rename one").into());
            }
        }
    }

    let mut code = String::from(
        "/// Every component built, by library name (the crate name with `_` for `-`), with its path.\n\
         pub const ALL: &[(&str, &str)] = &[\n",
    );
    for (name, path) in &components {
        let path = path.to_str().ok_or_else(|| format!("{} is not UTF-8", path.display()))?;
        let _ = writeln!(code, "    ({name:?}, {path:?}),");
    }
    code.push_str("];\n");
    let generated = out_dir.join("components.rs");
    fs::write(&generated, code).map_err(|e| format!("write {}: {e}", generated.display()))?;
    Ok(())
}

/// Asks cargo to run this script again when anything under `dir` changes except its `target/`,
/// which the nested builds write to (watching it would make every build after a change run them
/// twice).
fn watch(dir: &Path) -> Result<(), String> {
    let entries = fs::read_dir(dir).map_err(|e| format!("read {}: {e}", dir.display()))?;
    for entry in entries {
        let entry = entry.map_err(|e| format!("read {}: {e}", dir.display()))?;
        if entry.file_name() != "target" {
            println!("cargo::rerun-if-changed={}", entry.path().display());
        }
    }
    Ok(())
}

fn check_target_installed() -> Result<(), String> {
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| OsString::from("rustc"));
    let output = Command::new(&rustc)
        .args(["--print", "target-libdir", "--target", TARGET])
        .output()
        .map_err(|e| format!("run {}: {e}", rustc.to_string_lossy()))?;
    let libdir = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
    if output.status.success() && libdir.is_dir() {
        Ok(())
    } else {
        Err(format!("the {TARGET} target is not installed; run `rustup target add {TARGET}`"))
    }
}

/// Builds one guest workspace and returns the components it produced.
fn build_workspace(dir: &Path, name: &str) -> Result<Vec<PathBuf>, Failure> {
    let cargo = env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
    let mut command = Command::new(cargo);
    command
        .current_dir(dir)
        .args(["build", "--locked", "--release", "--target", TARGET, "--workspace"])
        .arg("--message-format=json-render-diagnostics")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    for (key, _) in env::vars_os() {
        if hands_down_outer_settings(&key) {
            command.env_remove(key);
        }
    }
    let output = command.output().map_err(|e| format!("run cargo in {name}: {e}"))?;
    if !output.status.success() {
        let message = format!("building the components in {name}/ failed (the compiler's errors are below)");
        return Err(Failure { message, show_output: true });
    }
    let mut components = Vec::new();
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let Ok(message) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        if message["reason"] != "compiler-artifact" {
            continue;
        }
        let files = message["filenames"].as_array().into_iter().flatten().filter_map(serde_json::Value::as_str);
        components.extend(files.filter(|f| f.ends_with(".wasm")).map(PathBuf::from));
    }
    if components.is_empty() {
        return Err(format!("cargo built no component in {name}/").into());
    }
    Ok(components)
}

/// Whether the variable would carry this build's own settings into a nested build, which must be
/// built with exactly the settings `scripts/test.sh` builds it with (and only then is a no-op).
fn hands_down_outer_settings(key: &OsStr) -> bool {
    const KEPT: [&str; 2] = ["CARGO_HOME", "CARGO_MAKEFLAGS"];
    const KEPT_PREFIXES: [&str; 5] =
        ["CARGO_NET_", "CARGO_HTTP_", "CARGO_REGISTRY_", "CARGO_REGISTRIES_", "CARGO_TERM_"];
    let Some(key) = key.to_str() else { return false };
    if KEPT.contains(&key) || KEPT_PREFIXES.iter().any(|p| key.starts_with(p)) {
        return false;
    }
    // CARGO_* covers what cargo sets for a build script (CARGO_ENCODED_RUSTFLAGS, CARGO_CFG_*,
    // CARGO_PKG_*, ...) and what configures a build (CARGO_TARGET_DIR, CARGO_BUILD_TARGET,
    // CARGO_PROFILE_*, CARGO_INCREMENTAL, ...); __CARGO_* are cargo's internal variables.
    key.starts_with("CARGO_")
        || key.starts_with("__CARGO")
        || matches!(key, "RUSTFLAGS" | "RUSTDOCFLAGS" | "RUSTC_WORKSPACE_WRAPPER")
}
