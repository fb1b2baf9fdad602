//! `ferrymq plugin new | build | test` as a department engineer runs them: a new project of each
//! language builds with the language's own toolchain (cargo; componentize-py, which
//! `scripts/test.sh` installs) and `plugin test` prints the template's expected decisions; what goes
//! wrong is said in one line.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

use serde_json::Value;

use crate::support::ferrymq;

/// The repository's root.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Runs `ferrymq` in `dir`: success, stdout, stderr.
fn kit(dir: &Path, args: &[&str]) -> (bool, String, String) {
    let out = ferrymq()
        .current_dir(dir)
        .args(args)
        .env_remove("RUST_LOG")
        // A project's Rust dependencies are the example plugins' (already built there), and its
        // JavaScript toolchain the SDK's (`npm ci` in sdk/js by scripts/test.sh).
        .env("CARGO_TARGET_DIR", root().join("plugins/target"))
        .env("FERRYMQ_COMPONENTIZE_QJS", root().join("sdk/js/node_modules/componentize-qjs"))
        // `plugin test` keeps compilations here rather than in the user's cache.
        .env("XDG_CACHE_HOME", root().join("target/plugin-test-cache"))
        .output()
        .expect("run ferrymq");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

/// `plugin test --json`'s decisions, in order.
fn decisions(stdout: &str) -> Vec<String> {
    stdout
        .lines()
        .map(|line| {
            let row: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
            row["decision"].as_str().expect("decision").to_owned()
        })
        .collect()
}

/// Builds a copy of the plugin project `plugins/<project>` (`python/enterprise-inbox`, …) with
/// `ferrymq plugin build` (once per test run) and returns its component.
pub fn project_plugin(project: &str) -> PathBuf {
    static BUILT: OnceLock<Mutex<Vec<(String, PathBuf)>>> = OnceLock::new();
    let mut built = BUILT.get_or_init(Mutex::default).lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some((_, path)) = built.iter().find(|(n, _)| n == project) {
        return path.clone();
    }
    let name = project.rsplit('/').next().expect("a name");
    // Built in a copy under target/ (replaced on each run), not in the source tree.
    let copy = root().join("target/plugin-projects").join(project);
    let source = root().join("plugins").join(project);
    let _ = std::fs::remove_dir_all(&copy);
    std::fs::create_dir_all(&copy).expect("create the copy");
    for entry in std::fs::read_dir(&source).expect("read the project") {
        let entry = entry.expect("entry");
        if entry.file_type().expect("type").is_file() {
            std::fs::copy(entry.path(), copy.join(entry.file_name())).expect("copy");
        }
    }
    let (ok, out, err) = kit(&copy, &["plugin", "build"]);
    assert!(ok, "ferrymq plugin build {project}:\n{out}{err}");
    let component = copy.join(format!("{name}.wasm"));
    built.push((project.to_owned(), component.clone()));
    component
}

#[test]
fn a_new_project_of_each_language_builds_and_decides_its_samples_as_its_readme_says() {
    let dir = tempfile::tempdir().expect("tempdir");
    for lang in ["rust", "python", "js", "c"] {
        let name = format!("inbox-{lang}");
        let (ok, out, err) = kit(dir.path(), &["plugin", "new", &name, "--lang", lang, "--world", "filter"]);
        assert!(ok, "{out}{err}");
        let project = dir.path().join(&name);
        let readme = std::fs::read_to_string(project.join("README.md")).expect("README");
        assert!(readme.contains("| 1 | deliver |\n| 2 | withhold |"), "the README lists the decisions:\n{readme}");
        for step in ["ferrymq plugin build", "ferrymq plugin test", "ferrymq plugin push", "ferrymq plugin bind"] {
            assert!(readme.contains(step), "the README shows {step}:\n{readme}");
        }
        let (ok, out, err) = kit(dir.path(), &["plugin", "new", &name, "--lang", lang, "--world", "route"]);
        assert!(!ok && err.contains("already exists"), "a second new into the same place: {out}{err}");

        let (ok, out, err) = kit(&project, &["plugin", "test"]);
        assert!(!ok && err.contains("not built yet: run `ferrymq plugin build"), "{out}{err}");
        let (ok, out, err) = kit(&project, &["plugin", "build"]);
        assert!(ok, "{lang}: {out}{err}");
        let (ok, out, err) = kit(&project, &["plugin", "test", "--json"]);
        assert!(ok, "{lang}: {out}{err}");
        assert_eq!(decisions(&out), ["deliver", "withhold", "deliver", "withhold"], "{lang}");
        // --param overrides what the manifest declares.
        let (ok, out, err) = kit(&project, &["plugin", "test", "--json", "--param", "enterprise_ids=E2"]);
        assert!(ok, "{err}");
        assert_eq!(decisions(&out), ["withhold", "deliver", "withhold", "withhold"], "{lang}");
    }
    // The Rust template's own unit tests, natively (beside the SDK's native build, to share it).
    let unit = Command::new("cargo")
        .current_dir(dir.path().join("inbox-rust"))
        .args(["test", "--quiet"])
        .env("CARGO_TARGET_DIR", root().join("sdk/rust/target"))
        .output()
        .expect("run cargo");
    let report = String::from_utf8_lossy(&unit.stdout);
    assert!(unit.status.success() && report.contains("1 passed"), "{report}{}", String::from_utf8_lossy(&unit.stderr));
    // The Python template's own unit tests, in plain Python with the SDK the build wrote.
    let project = dir.path().join("inbox-python");
    let unit = Command::new("python3")
        .current_dir(&project)
        .args(["-m", "unittest", "-v"])
        .env("PYTHONPATH", project.join(".ferrymq/python"))
        .output()
        .expect("run python3");
    let report = String::from_utf8_lossy(&unit.stderr);
    assert!(unit.status.success() && report.contains("Ran 2 tests"), "{report}");
    // The C template's, natively with the system's compiler.
    let unit = Command::new("make").current_dir(dir.path().join("inbox-c")).arg("test").output().expect("run make");
    let report = String::from_utf8_lossy(&unit.stdout);
    assert!(unit.status.success() && report.contains("policy tests passed"), "{report}");
    // The JavaScript template's, under Node.js.
    let unit = Command::new("node").current_dir(dir.path().join("inbox-js")).arg("--test").output().expect("run node");
    let report = String::from_utf8_lossy(&unit.stdout);
    assert!(unit.status.success() && report.contains("# pass 2"), "{report}");
}

#[test]
fn a_failing_plugin_a_core_module_and_bad_samples_are_each_named_in_one_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let messages = dir.path().join("m.jsonl");
    std::fs::write(&messages, "{\"topic\":\"inbox\",\"body\":\"x\"}\n{\"topic\":\"inbox\"}\n").expect("write");
    let trap = ferrymq_test_components::component("trap");
    let (ok, out, err) =
        kit(dir.path(), &["plugin", "test", trap.to_str().expect("utf-8"), "--messages", "m.jsonl", "--json"]);
    assert!(!ok, "a trapping plugin fails the run: {out}{err}");
    let rows: Vec<Value> = out.lines().map(|l| serde_json::from_str(l).expect("json")).collect();
    assert_eq!(rows.len(), 2, "{out}");
    for row in &rows {
        assert_eq!(row["decision"], "failed");
        let detail = row["detail"].as_str().expect("detail");
        assert!(
            detail.contains("the policy panicked: refusing message on topic inbox") && !detail.contains('\n'),
            "{detail}"
        );
    }

    let core = dir.path().join("core.wasm");
    std::fs::write(&core, b"\0asm\x01\0\0\0").expect("write");
    let (ok, _, err) = kit(dir.path(), &["plugin", "test", "core.wasm", "--messages", "m.jsonl"]);
    assert!(!ok && err.contains("not a component: build for wasm32-wasip2"), "{err}");

    std::fs::write(&messages, "{\"topic\":\"inbox\"}\n{\"topic\":\"inbox\",\"bdy\":\"x\"}\n").expect("write");
    let (ok, _, err) = kit(dir.path(), &["plugin", "test", trap.to_str().expect("utf-8"), "--messages", "m.jsonl"]);
    assert!(!ok && err.contains("line 2") && err.contains("unknown field `bdy`"), "{err}");

    let (ok, _, err) = kit(dir.path(), &["plugin", "build"]);
    assert!(!ok && err.contains("ferrymq-plugin.toml"), "not a project: {err}");
    let (ok, _, err) = kit(dir.path(), &["plugin", "new", "Bad_Name", "--lang", "python", "--world", "route"]);
    assert!(!ok && err.contains("lowercase letters"), "{err}");
}
