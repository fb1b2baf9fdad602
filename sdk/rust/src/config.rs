//! The binding's parameters, read once per plugin instance.

use std::sync::OnceLock;

/// Name/value parameters the administrator bound the plugin with.
#[derive(Debug, Default)]
pub struct Config {
    params: Vec<(String, String)>,
}

static CONFIG: OnceLock<Config> = OnceLock::new();

impl Config {
    /// The parameters (fetched from the broker on first use; they do not change for an instance).
    pub fn get() -> &'static Config {
        CONFIG.get_or_init(|| Config { params: crate::filter::ferrymq::plugin::host::config() })
    }

    /// Parameters given directly: for unit tests ([`crate::testing`]); a plugin reads its binding's
    /// with [`Config::get`].
    pub fn from_params(params: Vec<(String, String)>) -> Self {
        Self { params }
    }

    /// The value of parameter `name`.
    pub fn value(&self, name: &str) -> Option<&str> {
        self.params.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// The comma-separated items of parameter `name`, trimmed; empty when absent.
    pub fn list(&self, name: &str) -> impl Iterator<Item = &str> {
        self.value(name).unwrap_or_default().split(',').map(str::trim).filter(|s| !s.is_empty())
    }
}
