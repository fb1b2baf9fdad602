//! Integration tests of the broker domain over a real store.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod support;

mod dedup;
mod delivery;
mod loss;
mod policies;
mod timer;
mod transaction;
