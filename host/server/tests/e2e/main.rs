//! Cross-process tests: the real `ferrymq` binary this build produced, on loopback ports it picks.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod clients;
mod support;

mod cli;
mod compat;
mod standalone;
