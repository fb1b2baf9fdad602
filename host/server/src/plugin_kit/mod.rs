//! From nothing to a tested component, without a broker: `ferrymq plugin new` writes a project,
//! `ferrymq plugin build` turns it into a component with its language's toolchain, `ferrymq plugin
//! test` runs the component on sample messages in the broker's own sandbox and limits.
//!
//! A project is a directory with a `ferrymq-plugin.toml` ([`Manifest`]): the plugin's name, language
//! and world. `build` writes `<name>.wasm` beside it.

pub mod bench;
pub mod build;
pub mod componentize;
pub mod new;
pub mod samples;
pub mod sandbox;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::ValueEnum;
use serde::{Deserialize, Serialize};

/// The file that makes a directory a plugin project.
pub const MANIFEST: &str = "ferrymq-plugin.toml";
/// The sample messages a new project starts with, and `plugin test`'s default.
pub const MESSAGES: &str = "messages.jsonl";

/// A plugin's language.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Lang {
    Rust,
    Python,
    Js,
    C,
}

/// A plugin's world (`wit/plugin.wit`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum WorldArg {
    Filter,
    Route,
    TxCheck,
}

impl WorldArg {
    pub fn name(self) -> &'static str {
        match self {
            WorldArg::Filter => "filter",
            WorldArg::Route => "route",
            WorldArg::TxCheck => "tx-check",
        }
    }
}

/// `ferrymq-plugin.toml`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Lowercase letters, digits and `-`; the component is `<name>.wasm`.
    pub name: String,
    pub lang: Lang,
    pub world: WorldArg,
    /// Parameters `plugin test` gives the plugin unless `--param` says otherwise: the ones a binding
    /// is expected to set.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub params: BTreeMap<String, String>,
}

impl Manifest {
    /// Reads `dir/ferrymq-plugin.toml`.
    pub fn read(dir: &Path) -> anyhow::Result<Self> {
        let path = dir.join(MANIFEST);
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!("read {} (a plugin project has one; `ferrymq plugin new` writes it)", path.display())
        })?;
        let manifest: Manifest = toml::from_str(&text).with_context(|| format!("in {}", path.display()))?;
        check_name(&manifest.name).with_context(|| format!("in {}", path.display()))?;
        Ok(manifest)
    }

    /// Where `build` writes the component.
    pub fn component(&self, dir: &Path) -> PathBuf {
        dir.join(format!("{}.wasm", self.name))
    }
}

/// A project name: 1 to 64 of lowercase letters, digits and `-`, starting with a letter (it names a
/// directory, a crate, a Python module's package and a file).
pub fn check_name(name: &str) -> anyhow::Result<()> {
    let ok = (1..=64).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.ends_with('-');
    if !ok {
        bail!("plugin name {name:?}: 1 to 64 lowercase letters, digits and '-', starting with a letter");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        for good in ["inbox", "enterprise-inbox", "a1"] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in ["", "Inbox", "1inbox", "in box", "../x", "inbox-", "in_box", &"a".repeat(65)] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }
}
