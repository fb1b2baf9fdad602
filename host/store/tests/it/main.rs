//! Integration tests of the store: one binary, one module per behaviour.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod support;

mod basic;
mod crafted;
mod crash;
mod disk_full;
mod disk_pressure;
mod fuzz_recovery;
mod raw;
mod recovery;
mod resources;
mod retention;
