//! `ferrymq plugin new`: a project directory that builds as it is — the policy, its build file, a
//! README with the whole path from here to an active binding, and sample messages whose expected
//! decisions the README lists.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Args;

use super::build::{COMPONENTIZE_PY, COMPONENTIZE_QJS, vendor};
use super::{Lang, MANIFEST, MESSAGES, Manifest, WorldArg, check_name};

#[derive(Debug, Args)]
pub struct NewArgs {
    /// The plugin's name: lowercase letters, digits and '-'; also the new directory's name.
    pub name: String,
    #[arg(long, value_enum)]
    pub lang: Lang,
    #[arg(long, value_enum)]
    pub world: WorldArg,
    /// Where to create the project (default: ./NAME). It must not exist yet.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

/// What each world's template does, and what it decides on its sample messages.
struct Template {
    summary: &'static str,
    messages: &'static str,
    /// Parameters the template reads, with the values its samples expect.
    params: &'static [(&'static str, &'static str)],
    /// The decision `plugin test` prints for each sample, in order.
    expected: &'static [&'static str],
    rust: &'static str,
    python: &'static str,
    python_test: &'static str,
    js: &'static str,
    js_test: &'static str,
    c: &'static str,
    c_test: &'static str,
}

fn template(world: WorldArg) -> Template {
    match world {
        WorldArg::Filter => Template {
            summary: "Delivers a message to the consumer group only when its `enterpriseId` property is one of \
                      the binding's `enterprise_ids`.",
            messages: include_str!("templates/messages/filter.jsonl"),
            params: &[("enterprise_ids", "E1,E3")],
            expected: &["deliver", "withhold", "deliver", "withhold"],
            rust: include_str!("templates/rust/filter.rs"),
            python: include_str!("templates/python/filter.py"),
            python_test: include_str!("templates/python/test_filter.py"),
            js: include_str!("templates/js/filter.js"),
            js_test: include_str!("templates/js/test_filter.js"),
            c: include_str!("templates/c/filter.c"),
            c_test: include_str!("templates/c/test_filter.c"),
        },
        WorldArg::Route => Template {
            summary: "Refuses a message without an `enterpriseId` property, drops one tagged `test`, and stores \
                      every other one with `checked=yes` added.",
            messages: include_str!("templates/messages/route.jsonl"),
            params: &[],
            expected: &["accept-changed", "drop", "reject"],
            rust: include_str!("templates/rust/route.rs"),
            python: include_str!("templates/python/route.py"),
            python_test: include_str!("templates/python/test_route.py"),
            js: include_str!("templates/js/route.js"),
            js_test: include_str!("templates/js/test_route.js"),
            c: include_str!("templates/c/route.c"),
            c_test: include_str!("templates/c/test_route.c"),
        },
        WorldArg::TxCheck => Template {
            summary: "Commits an orphaned transaction whose half message says `approval=granted`, rolls back \
                      `approval=refused`, and leaves any other to the producer's check-back.",
            messages: include_str!("templates/messages/tx-check.jsonl"),
            params: &[],
            expected: &["commit", "rollback", "unknown"],
            rust: include_str!("templates/rust/tx-check.rs"),
            python: include_str!("templates/python/tx-check.py"),
            python_test: include_str!("templates/python/test_tx-check.py"),
            js: include_str!("templates/js/tx-check.js"),
            js_test: include_str!("templates/js/test_tx-check.js"),
            c: include_str!("templates/c/tx-check.c"),
            c_test: include_str!("templates/c/test_tx-check.c"),
        },
    }
}

pub fn run(args: NewArgs) -> anyhow::Result<ExitCode> {
    check_name(&args.name)?;
    let dir = args.dir.clone().unwrap_or_else(|| PathBuf::from(&args.name));
    if dir.exists() {
        bail!("{} already exists; choose another name or --dir", dir.display());
    }
    let t = template(args.world);
    let manifest = Manifest {
        name: args.name.clone(),
        lang: args.lang,
        world: args.world,
        params: t.params.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect::<BTreeMap<_, _>>(),
    };
    let mut files: Vec<(PathBuf, String)> = vec![
        (MANIFEST.into(), manifest_text(&manifest)?),
        (MESSAGES.into(), t.messages.to_owned()),
        ("README.md".into(), readme(&manifest, &t)),
    ];
    match args.lang {
        Lang::Rust => {
            files
                .push(("Cargo.toml".into(), include_str!("templates/rust/Cargo.toml").replace("{{name}}", &args.name)));
            files.push(("src/lib.rs".into(), t.rust.to_owned()));
            files.push((
                ".cargo/config.toml".into(),
                "# Wasm SIMD (the broker's engine runs it): the SDK's byte searches go 16 bytes at a time.\n\
                 [target.wasm32-wasip2]\nrustflags = [\"-C\", \"target-feature=+simd128\"]\n"
                    .into(),
            ));
            files.push((".gitignore".into(), format!("/target\n/{}.wasm\n", args.name)));
        }
        Lang::Python => {
            files.push(("policy.py".into(), t.python.to_owned()));
            files.push(("test_policy.py".into(), t.python_test.to_owned()));
            files.push((".gitignore".into(), format!("__pycache__/\n/{}.wasm\n", args.name)));
        }
        Lang::Js => {
            files.push(("policy.js".into(), t.js.to_owned()));
            files.push(("policy.test.js".into(), t.js_test.to_owned()));
            let package = include_str!("templates/js/package.json");
            files.push((
                "package.json".into(),
                package.replace("{{name}}", &args.name).replace("{{world}}", args.world.name()),
            ));
            files.push((".gitignore".into(), format!("node_modules/\n/{}.wasm\n", args.name)));
        }
        Lang::C => {
            files.push(("policy.c".into(), t.c.to_owned()));
            files.push(("test_policy.c".into(), t.c_test.to_owned()));
            let define = match args.world {
                WorldArg::Filter => "FERRYMQ_WORLD_FILTER",
                WorldArg::Route => "FERRYMQ_WORLD_ROUTE",
                WorldArg::TxCheck => "FERRYMQ_WORLD_TX_CHECK",
            };
            files.push(("Makefile".into(), include_str!("templates/c/Makefile").replace("{{world_define}}", define)));
            files.push((".gitignore".into(), format!("/policy-test\n/{}.wasm\n", args.name)));
        }
    }
    for (path, text) in &files {
        let path = dir.join(path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).with_context(|| format!("create {}", parent.display()))?;
        }
        std::fs::write(&path, text).with_context(|| format!("write {}", path.display()))?;
    }
    // The SDK and contract now, so that editors and `cargo check` find them before the first build.
    vendor(&dir, args.lang)?;
    eprintln!(
        "created {} ({} {} plugin); next: ferrymq plugin build {} && ferrymq plugin test {}",
        dir.display(),
        lang_name(args.lang),
        args.world.name(),
        dir.display(),
        dir.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn manifest_text(manifest: &Manifest) -> anyhow::Result<String> {
    let body = toml::to_string(manifest).context("write the manifest")?;
    Ok(format!(
        "# A ferrymq plugin project: `ferrymq plugin build` writes <name>.wasm; `ferrymq plugin test`\n\
         # runs it on messages.jsonl with [params] (override with --param name=value).\n{body}"
    ))
}

fn lang_name(lang: Lang) -> &'static str {
    match lang {
        Lang::Rust => "Rust",
        Lang::Python => "Python",
        Lang::Js => "JavaScript",
        Lang::C => "C",
    }
}

fn readme(m: &Manifest, t: &Template) -> String {
    let name = &m.name;
    let world = m.world.name();
    let (toolchain, unit_tests) = match m.lang {
        Lang::Rust => (
            "Rust with the wasm32-wasip2 target (`rustup target add wasm32-wasip2`)".to_owned(),
            "\nThe policy's own unit tests (in `src/lib.rs`, with `ferrymq_plugin_sdk::testing`) run natively:\n\n\
             ```sh\ncargo test\n```\n"
                .to_owned(),
        ),
        Lang::Python => (
            format!("Python 3 and componentize-py (`pip install {COMPONENTIZE_PY}`)"),
            "\nThe policy's own unit tests run in plain Python, with the SDK `plugin build` wrote:\n\n\
             ```sh\nPYTHONPATH=.ferrymq/python python3 -m unittest\n```\n"
                .to_owned(),
        ),
        Lang::Js => (
            format!("Node.js 20 or newer and componentize-qjs (`npm install` here installs {COMPONENTIZE_QJS})"),
            "\nThe policy's own unit tests run under Node.js, with the SDK `plugin build` wrote:\n\n\
             ```sh\nnode --test\n```\n"
                .to_owned(),
        ),
        Lang::C => (
            "clang with the wasm32 target and WASI's libc (Debian: `apt-get install clang lld wasi-libc \
             libclang-rt-dev-wasm32`)"
                .to_owned(),
            "\nThe policy's own unit tests run natively, with the SDK `plugin build` wrote:\n\n```sh\nmake test\n```\n"
                .to_owned(),
        ),
    };
    let params: String = m.params.iter().map(|(k, v)| format!(" --param {k}={v}")).collect();
    let group = if m.world == WorldArg::Filter { " --group <group>" } else { "" };
    let topic_type = if m.world == WorldArg::TxCheck { " --type transaction" } else { "" };
    let expected: String = t.expected.iter().enumerate().map(|(i, d)| format!("| {} | {d} |\n", i + 1)).collect();
    format!(
        "# {name}\n\n\
         A ferrymq `{world}` plugin in {lang}. {summary}\n\n\
         ## Build and test\n\n\
         Needs {toolchain}.\n\n\
         ```sh\n\
         ferrymq plugin build          # writes {name}.wasm\n\
         ferrymq plugin test           # runs it on {MESSAGES} in the broker's sandbox and limits\n\
         ferrymq plugin test --json    # the same, one JSON object per message\n\
         ```\n\n\
         `plugin test` gives the plugin the parameters under `[params]` in `{MANIFEST}` (change them with\n\
         `--param name=value`). On the sample messages it prints:\n\n\
         | line | decision |\n|---|---|\n{expected}{unit_tests}\n\
         ## On a broker\n\n\
         ```sh\n\
         ferrymq admin topic create <topic>{topic_type}                      # unless it exists: bind needs it\n\
         ferrymq plugin push {name}.wasm --name <department>/{name}          # prints the version, e.g. 1\n\
         ferrymq plugin bind <binding> --kind {world} --topic <topic>{group} \\\n    --plugin <department>/{name} --plugin-version 1{params}\n\
         ferrymq plugin bindings                                             # calls and failures per binding\n\
         # a new version: build, push (-> 2), then switch the binding over, atomically between batches\n\
         ferrymq plugin activate <binding> 2\n\
         ferrymq plugin rollback <binding>\n\
         ```\n\n\
         `--admin-addr` (or `FERRYMQ_ADMIN`) names another broker, `--token` (or `FERRYMQ_TOKEN`) its token;\n\
         `ferrymq plugin keygen` and `push --sign-key` sign versions where the broker requires it.\n\
         `.ferrymq/` holds the contract and SDK this `ferrymq` wrote; every build refreshes it.\n",
        lang = lang_name(m.lang),
        summary = t.summary,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The README's table of decisions has a row for each sample message, and every template's
    /// samples parse.
    #[test]
    fn each_template_names_a_decision_for_each_of_its_samples() {
        for world in [WorldArg::Filter, WorldArg::Route, WorldArg::TxCheck] {
            let t = template(world);
            let samples = super::super::samples::parse(t.messages).expect("the template's samples parse");
            assert_eq!(samples.len(), t.expected.len(), "{}", world.name());
        }
    }
}
