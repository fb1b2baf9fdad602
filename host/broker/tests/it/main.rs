//! Integration tests of the broker domain over a real store.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod support;

mod delivery;
mod policies;
mod timer;
mod transaction;
