//! Where the Wasm components that the tests and benchmarks load are: the example plugins of
//! `plugins/` and the fixtures of `tests/plugins/`, built for wasm32-wasip2 by this crate's build
//! script whenever their sources (or the SDK's, or the WIT) change.

use std::path::PathBuf;

include!(concat!(env!("OUT_DIR"), "/components.rs"));

/// The component built from the plugin crate whose library is `name` (`enterprise_inbox` for the
/// crate `enterprise-inbox`).
///
/// # Panics
/// If no plugin or fixture has that name: the caller is wrong, and the message lists the names.
pub fn component(name: &str) -> PathBuf {
    match ALL.iter().find(|(n, _)| *n == name) {
        Some((_, path)) => PathBuf::from(path),
        None => {
            let names: Vec<&str> = ALL.iter().map(|(n, _)| *n).collect();
            panic!("no plugin or fixture builds a component named {name:?}; they are {}", names.join(", "))
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::expect_used)]
    use super::*;

    /// The preamble of a binary component: `\0asm`, version 0x0d, layer 1.
    const COMPONENT_PREAMBLE: [u8; 8] = [0x00, 0x61, 0x73, 0x6d, 0x0d, 0x00, 0x01, 0x00];

    #[test]
    fn every_example_and_fixture_is_built_as_a_component() {
        for name in ["enterprise_inbox", "tx_check_http", "spin_forever", "version_split"] {
            assert!(ALL.iter().any(|(n, _)| *n == name), "{name} is missing from {ALL:?}");
        }
        for (name, path) in ALL {
            let bytes = std::fs::read(path).expect("read component");
            assert!(bytes.starts_with(&COMPONENT_PREAMBLE), "{name} ({path}) is not a component");
        }
    }

    #[test]
    #[should_panic(expected = "enterprise_inbox")]
    fn an_unknown_name_is_refused_with_the_names_that_exist() {
        component("enterprise-inbox");
    }
}
