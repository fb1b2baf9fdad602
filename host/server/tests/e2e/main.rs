//! Cross-process tests: the real `ferrymq` binary this build produced, on loopback ports it picks.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod clients;
mod netns;
mod netns_harness;
mod support;

mod admin;
mod bench;
mod cli;
mod compat;
mod dedup;
mod examples;
mod gateway;
mod hot_load;
mod limits;
mod netns_cluster;
mod netns_gateway;
mod plugin_kit;
mod plugins;
mod pull;
mod standalone;
mod tx_crash;

/// How long one official-client driver run may take.
pub fn compat_limit() -> std::time::Duration {
    std::time::Duration::from_secs(90)
}
