//! `ferrymq plugin build`: a project directory into `<name>.wasm`, with its language's toolchain.
//!
//! The contract (`wit/plugin.wit`) and the language's SDK travel inside this binary: each build
//! writes them into the project's `.ferrymq/` (so a project needs no checkout of ferrymq, and always
//! builds against the contract of the broker version that ships the command), then runs:
//! - Rust: `cargo build --release --target wasm32-wasip2` (the project depends on
//!   `.ferrymq/sdk/rust`);
//! - Python: `componentize-py -d .ferrymq/wit -w <world> componentize policy` with the project and
//!   `.ferrymq/python` on its path;
//! - JavaScript: `node .ferrymq/js/build.mjs <world> <name>.wasm`, which runs componentize-qjs on a
//!   generated entry module that exports the world's function from `policy.js`'s default export;
//! - C: clang for wasm32-wasi with wasi-libc compiles `*.c` with `.ferrymq/c/ferrymq_plugin.c`
//!   into a core module, which [`super::componentize`] wraps into a component.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::Instant;

use anyhow::{Context, bail};
use clap::Args;

use super::{Lang, Manifest, WorldArg};

/// The componentize-py release the Python SDK is tested with.
pub const COMPONENTIZE_PY: &str = "componentize-py==0.25.1";
/// The componentize-qjs release the JavaScript SDK is tested with (as `sdk/js/build.mjs` says).
pub const COMPONENTIZE_QJS: &str = "componentize-qjs@0.4.5";
/// The Rust target plugins are built for.
const RUST_TARGET: &str = "wasm32-wasip2";

/// Where the contract and SDKs are written inside a project.
pub const VENDOR_DIR: &str = ".ferrymq";

/// The files written into `.ferrymq/`: the contract, then each SDK.
const WIT: &[(&str, &str)] = &[("wit/plugin.wit", include_str!("../../../../wit/plugin.wit"))];
const RUST_SDK: &[(&str, &str)] = &[
    ("sdk/rust/Cargo.toml", include_str!("../../../../sdk/rust/Cargo.toml")),
    ("sdk/rust/src/lib.rs", include_str!("../../../../sdk/rust/src/lib.rs")),
    ("sdk/rust/src/batch.rs", include_str!("../../../../sdk/rust/src/batch.rs")),
    ("sdk/rust/src/config.rs", include_str!("../../../../sdk/rust/src/config.rs")),
    ("sdk/rust/src/testing.rs", include_str!("../../../../sdk/rust/src/testing.rs")),
];
const PYTHON_SDK: &[(&str, &str)] = &[
    ("python/ferrymq_plugin/__init__.py", include_str!("../../../../sdk/python/ferrymq_plugin/__init__.py")),
    ("python/ferrymq_plugin/batch.py", include_str!("../../../../sdk/python/ferrymq_plugin/batch.py")),
    ("python/ferrymq_plugin/config.py", include_str!("../../../../sdk/python/ferrymq_plugin/config.py")),
    ("python/ferrymq_plugin/decisions.py", include_str!("../../../../sdk/python/ferrymq_plugin/decisions.py")),
    ("python/ferrymq_plugin/testing.py", include_str!("../../../../sdk/python/ferrymq_plugin/testing.py")),
];
const C_SDK: &[(&str, &str)] = &[
    ("c/ferrymq_plugin.h", include_str!("../../../../sdk/c/ferrymq_plugin.h")),
    ("c/ferrymq_plugin.c", include_str!("../../../../sdk/c/ferrymq_plugin.c")),
    ("c/ferrymq_testing.h", include_str!("../../../../sdk/c/ferrymq_testing.h")),
    ("c/ferrymq_testing.c", include_str!("../../../../sdk/c/ferrymq_testing.c")),
];
const JS_SDK: &[(&str, &str)] = &[
    ("js/ferrymq-plugin.js", include_str!("../../../../sdk/js/ferrymq-plugin.js")),
    ("js/testing.js", include_str!("../../../../sdk/js/testing.js")),
    ("js/build.mjs", include_str!("../../../../sdk/js/build.mjs")),
];

#[derive(Debug, Args)]
pub struct BuildArgs {
    /// The plugin project (default: the current directory).
    pub dir: Option<PathBuf>,
}

pub fn run(args: BuildArgs) -> anyhow::Result<ExitCode> {
    let dir = args.dir.unwrap_or_else(|| PathBuf::from("."));
    let manifest = Manifest::read(&dir)?;
    let started = Instant::now();
    let out = manifest.component(&dir);
    vendor(&dir, manifest.lang)?;
    match manifest.lang {
        Lang::Rust => build_rust(&dir, &out)?,
        Lang::Python => build_python(&dir, &manifest, &out)?,
        Lang::Js => build_js(&dir, &manifest, &out)?,
        Lang::C => build_c(&dir, &manifest, &out)?,
    }
    let size = std::fs::metadata(&out).with_context(|| format!("the build wrote no {}", out.display()))?.len();
    eprintln!("built {} ({size} bytes) in {:.1} s", out.display(), started.elapsed().as_secs_f64());
    Ok(ExitCode::SUCCESS)
}

/// Writes the contract and the language's SDK into `dir/.ferrymq/`, replacing what is there.
pub fn vendor(dir: &Path, lang: Lang) -> anyhow::Result<()> {
    let root = dir.join(VENDOR_DIR);
    if root.exists() {
        std::fs::remove_dir_all(&root).with_context(|| format!("clear {}", root.display()))?;
    }
    let sdk = match lang {
        Lang::Rust => RUST_SDK,
        Lang::Python => PYTHON_SDK,
        Lang::Js => JS_SDK,
        Lang::C => C_SDK,
    };
    for (path, text) in WIT.iter().chain(sdk) {
        let path = root.join(path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).with_context(|| format!("create {}", parent.display()))?;
        }
        std::fs::write(&path, text).with_context(|| format!("write {}", path.display()))?;
    }
    std::fs::write(root.join(".gitignore"), "*\n").with_context(|| format!("write {}/.gitignore", root.display()))?;
    Ok(())
}

/// Runs a tool, naming it (and what to install) when it cannot be started.
fn run_tool(mut command: Command, tool: &str, install: &str) -> anyhow::Result<std::process::Output> {
    let output = command.stdin(Stdio::null()).stderr(Stdio::inherit()).output();
    match output {
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => bail!("{tool} is not installed: {install}"),
        Err(err) => Err(err).with_context(|| format!("run {tool}")),
        Ok(output) if !output.status.success() => bail!("{tool} failed ({}); its errors are above", output.status),
        Ok(output) => Ok(output),
    }
}

fn build_rust(dir: &Path, out: &Path) -> anyhow::Result<()> {
    let libdir = Command::new("rustc").args(["--print", "target-libdir", "--target", RUST_TARGET]).output();
    match libdir {
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            bail!("rustc is not installed: install Rust from https://rustup.rs, then `rustup target add {RUST_TARGET}`")
        }
        Err(err) => return Err(err).context("run rustc"),
        Ok(o) if !o.status.success() || !Path::new(String::from_utf8_lossy(&o.stdout).trim()).is_dir() => {
            bail!("the {RUST_TARGET} target is not installed: rustup target add {RUST_TARGET}")
        }
        Ok(_) => {}
    }
    let mut cargo = Command::new("cargo");
    cargo.current_dir(dir).args([
        "build",
        "--release",
        "--target",
        RUST_TARGET,
        "--message-format=json-render-diagnostics",
    ]);
    let output = run_tool(cargo, "cargo", "install Rust from https://rustup.rs")?;
    let mut built = None;
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let Ok(message) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        if message["reason"] != "compiler-artifact" {
            continue;
        }
        let mut files = message["filenames"].as_array().into_iter().flatten().filter_map(serde_json::Value::as_str);
        if let Some(wasm) = files.rfind(|f| f.ends_with(".wasm")) {
            built = Some(PathBuf::from(wasm));
        }
    }
    let built = built.context("cargo built no .wasm: the crate needs `crate-type = [\"cdylib\"]`")?;
    std::fs::copy(&built, out).with_context(|| format!("copy {} to {}", built.display(), out.display()))?;
    Ok(())
}

fn build_python(dir: &Path, manifest: &Manifest, out: &Path) -> anyhow::Result<()> {
    if !dir.join("policy.py").is_file() {
        bail!("{} has no policy.py (the module holding the plugin function)", dir.display());
    }
    let vendor = dir.join(VENDOR_DIR);
    let mut tool = Command::new("componentize-py");
    tool.current_dir(dir)
        .arg("-d")
        .arg(vendor.join("wit").canonicalize().context("find the vendored contract")?)
        .args(["-w", manifest.world.name(), "componentize", "-p", "."])
        .arg("-p")
        .arg(vendor.join("python").canonicalize().context("find the vendored SDK")?)
        .arg("policy")
        .arg("-o")
        .arg(out.file_name().context("the output has a file name")?);
    run_tool(tool, "componentize-py", &format!("pip install {COMPONENTIZE_PY}"))?;
    Ok(())
}

/// The module componentize-qjs starts from: the world's imports handed to the SDK, and the world's
/// export made from `policy.js`'s default export.
fn js_entry(world: WorldArg) -> String {
    let (imports, export) = match world {
        WorldArg::Filter => (
            "import { log, config } from \"ferrymq:plugin/host@0.1.0\";\n\
             import { body } from \"ferrymq:plugin/batch@0.1.0\";\n",
            "bindHost({ log, config, body });\nexport const filter = exportFilter(policy);\n",
        ),
        WorldArg::Route => (
            "import { log, config } from \"ferrymq:plugin/host@0.1.0\";\n",
            "bindHost({ log, config });\nexport const route = exportRoute(policy);\n",
        ),
        WorldArg::TxCheck => (
            "import { log, config } from \"ferrymq:plugin/host@0.1.0\";\n",
            "bindHost({ log, config });\nexport const check = exportTxCheck(policy);\n",
        ),
    };
    format!(
        "// Written by `ferrymq plugin build`: the component's entry module.\n{imports}\
         import {{ bindHost, exportFilter, exportRoute, exportTxCheck }} from \"./ferrymq-plugin.js\";\n\
         import policy from \"../../policy.js\";\n\n{export}"
    )
}

fn build_js(dir: &Path, manifest: &Manifest, out: &Path) -> anyhow::Result<()> {
    if !dir.join("policy.js").is_file() {
        bail!("{} has no policy.js (the module whose default export is the plugin function)", dir.display());
    }
    let js = dir.join(VENDOR_DIR).join("js");
    std::fs::write(js.join("entry.js"), js_entry(manifest.world)).context("write the entry module")?;
    let mut node = Command::new("node");
    node.current_dir(dir)
        .arg(js.join("build.mjs").canonicalize().context("find the vendored build script")?)
        .arg(manifest.world.name())
        .arg(out.file_name().context("the output has a file name")?);
    match node.stdin(Stdio::null()).stderr(Stdio::inherit()).status() {
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            bail!("node is not installed: install Node.js 20 or newer, then `npm install {COMPONENTIZE_QJS}`")
        }
        Err(err) => Err(err).context("run node"),
        Ok(status) if status.code() == Some(3) => {
            bail!("componentize-qjs is not installed: npm install {COMPONENTIZE_QJS} (in the project)")
        }
        Ok(status) if !status.success() => bail!("building the component failed ({status}); the errors are above"),
        Ok(_) => Ok(()),
    }
}

/// Debian's packages (clang, lld, wasi-libc, libclang-rt-dev-wasm32) put WASI's libc here; the
/// wasi-sdk elsewhere. `WASI_SYSROOT` wins.
const SYSROOTS: [&str; 3] = ["/usr", "/usr/share/wasi-sysroot", "/opt/wasi-sdk/share/wasi-sysroot"];
/// Compilers tried in order unless `FERRYMQ_CLANG` names one.
const CLANGS: [&str; 6] = ["clang", "clang-19", "clang-18", "clang-17", "clang-16", "clang-14"];
const C_INSTALL: &str =
    "install clang, lld and wasi-libc (Debian: apt-get install clang lld wasi-libc libclang-rt-dev-wasm32)";

fn wasi_sysroot() -> anyhow::Result<PathBuf> {
    if let Some(root) = std::env::var_os("WASI_SYSROOT").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(root));
    }
    SYSROOTS.iter().map(PathBuf::from).find(|root| root.join("lib/wasm32-wasi/libc.a").is_file()).with_context(|| {
        format!("no WASI libc found (looked in {}; set WASI_SYSROOT): {C_INSTALL}", SYSROOTS.join(", "))
    })
}

fn clang() -> anyhow::Result<String> {
    if let Some(clang) = std::env::var("FERRYMQ_CLANG").ok().filter(|v| !v.is_empty()) {
        return Ok(clang);
    }
    CLANGS
        .iter()
        .find(|c| Command::new(c).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok())
        .map(|c| (*c).to_owned())
        .with_context(|| {
            format!("clang is not installed (tried {}; or set FERRYMQ_CLANG): {C_INSTALL}", CLANGS.join(", "))
        })
}

fn build_c(dir: &Path, manifest: &Manifest, out: &Path) -> anyhow::Result<()> {
    let mut sources: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("read {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension().is_some_and(|e| e == "c")
                && !p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("test"))
        })
        .collect();
    sources.sort();
    if sources.is_empty() {
        bail!("{} has no .c files (the policy; files named test*.c are its unit tests)", dir.display());
    }
    let vendor = dir.join(VENDOR_DIR).join("c");
    let core = vendor.join("plugin.core.wasm");
    let define = match manifest.world {
        WorldArg::Filter => "-DFERRYMQ_WORLD_FILTER",
        WorldArg::Route => "-DFERRYMQ_WORLD_ROUTE",
        WorldArg::TxCheck => "-DFERRYMQ_WORLD_TX_CHECK",
    };
    let mut cc = Command::new(clang()?);
    cc.current_dir(dir)
        // Wasm SIMD, which the broker's engine runs: the SDK's byte loops vectorize.
        .args(["--target=wasm32-wasi", "-O3", "-msimd128", "-mexec-model=reactor", "-Wall", "-Wextra", define])
        .arg(format!("--sysroot={}", wasi_sysroot()?.display()))
        .arg("-I")
        .arg(&vendor)
        .args(&sources)
        .arg(vendor.join("ferrymq_plugin.c"))
        .arg("-o")
        .arg(&core);
    run_tool(cc, "clang", C_INSTALL)?;
    let bytes = std::fs::read(&core).with_context(|| format!("read {}", core.display()))?;
    let component = super::componentize::component(&bytes, WIT[0].1, manifest.world.name())?;
    std::fs::write(out, component).with_context(|| format!("write {}", out.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every source file of each SDK travels in the binary (a file added to an SDK and not here
    /// would leave vendored projects unbuildable).
    #[test]
    fn the_vendored_sdks_are_whole() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        for (dir, ext, files, prefix) in [
            ("sdk/rust/src", "rs", RUST_SDK, "sdk/rust/src/"),
            ("sdk/python/ferrymq_plugin", "py", PYTHON_SDK, "python/ferrymq_plugin/"),
            ("sdk/js", "js", JS_SDK, "js/"),
            ("sdk/c", "c", C_SDK, "c/"),
            ("sdk/c", "h", C_SDK, "c/"),
            ("sdk/js", "mjs", JS_SDK, "js/"),
        ] {
            let mut on_disk: Vec<String> = std::fs::read_dir(root.join(dir))
                .expect("read the SDK")
                .filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|name| name.ends_with(&format!(".{ext}")))
                .collect();
            on_disk.sort();
            let mut vendored: Vec<String> =
                files.iter().filter_map(|(path, _)| path.strip_prefix(prefix).map(str::to_owned)).collect();
            vendored.retain(|name| name.ends_with(&format!(".{ext}")));
            vendored.sort();
            assert_eq!(vendored, on_disk, "{dir}");
        }
    }
}
