//! Write ferrymq policy plugins in Rust.
//!
//! A plugin is a WebAssembly component for one of three worlds of `ferrymq:plugin@0.1.0` (see
//! `wit/plugin.wit`): a **filter** decides which messages reach a consumer group, a **route** decides
//! what becomes of each produced message, a **tx-check** resolves orphaned transactions. This crate
//! carries the generated bindings, decodes the broker's compact batch encoding without allocating, and
//! turns a plain function into an exported plugin:
//!
//! ```no_run
//! // A filter that delivers only messages tagged "urgent".
//! ferrymq_plugin_sdk::filter_plugin!(|message, _config| message.tag() == Some("urgent"));
//! # fn main() {}
//! ```
//!
//! Build with `cargo build --target wasm32-wasip2 --release`; the `.wasm` file is the component.

mod batch;
mod config;
pub mod testing;

pub use batch::{Batch, Message};
pub use config::Config;

/// Bindings of the `filter` world.
pub mod filter {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "filter",
        pub_export_macro: true,
        export_macro_name: "export_filter",
        default_bindings_module: "ferrymq_plugin_sdk::filter",
    });
}

/// Bindings of the `route` world.
pub mod route {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "route",
        pub_export_macro: true,
        export_macro_name: "export_route",
        default_bindings_module: "ferrymq_plugin_sdk::route",
    });
}

/// Bindings of the `tx-check` world.
pub mod tx_check {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "tx-check",
        pub_export_macro: true,
        export_macro_name: "export_tx_check",
        default_bindings_module: "ferrymq_plugin_sdk::tx_check",
    });
}

pub use route::ferrymq::plugin::types::{Change, RouteDecision};
pub use tx_check::ferrymq::plugin::types::Resolution;

/// Log levels for [`log`].
pub use filter::ferrymq::plugin::host::Level;

/// Writes to the broker's log (rate-limited by the broker).
pub fn log(level: Level, message: &str) {
    filter::ferrymq::plugin::host::log(level, message);
}

/// Makes a panic in the policy reach the broker as one log line (its message and where), which the
/// broker then gives as the reason of the failed call, instead of a bare trap.
fn report_panics() {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            let message = info
                .payload()
                .downcast_ref::<&str>()
                .copied()
                .or_else(|| info.payload().downcast_ref::<String>().map(String::as_str))
                .unwrap_or("a panic without a message");
            let place = info.location().map(|l| format!(" (at {}:{})", l.file(), l.line())).unwrap_or_default();
            log(Level::Error, &format!("the policy panicked: {}{place}", message.replace('\n', " ")));
        }));
    });
}

/// Runs `keep` over a filter batch and encodes the answer the broker expects.
#[doc(hidden)]
pub fn run_filter(messages: &[u8], keep: impl Fn(&Message<'_>, &Config) -> bool) -> Vec<u8> {
    report_panics();
    let config = Config::get();
    // Only filters may ask the broker for a body: the import belongs to the filter world.
    let fetch: fn(u32) -> Option<Vec<u8>> = filter::ferrymq::plugin::batch::body;
    let Some(batch) = Batch::parse(messages, Some(fetch)) else {
        log(Level::Error, "the broker sent a batch this SDK cannot read");
        return Vec::new();
    };
    let mut bits = vec![0u8; batch.len().div_ceil(8)];
    for (i, message) in batch.iter().enumerate() {
        if keep(&message, config) {
            bits[i / 8] |= 1 << (i % 8);
        }
    }
    bits
}

/// Runs `decide` over the one message of a route call.
#[doc(hidden)]
pub fn run_route(message: &[u8], decide: impl Fn(&Message<'_>, &Config) -> RouteDecision) -> RouteDecision {
    report_panics();
    let config = Config::get();
    match Batch::parse(message, None).and_then(|b| b.iter().next()) {
        Some(m) => decide(&m, config),
        None => RouteDecision::Reject("the broker sent a message this plugin cannot read".into()),
    }
}

/// Runs `check` over a transaction check.
#[doc(hidden)]
pub fn run_tx_check(
    transaction_id: &str,
    message: &[u8],
    check: impl Fn(&str, &Message<'_>, &Config) -> Resolution,
) -> Resolution {
    report_panics();
    let config = Config::get();
    match Batch::parse(message, None).and_then(|b| b.iter().next()) {
        Some(m) => check(transaction_id, &m, config),
        None => Resolution::Unknown,
    }
}

/// Exports a filter plugin from `|message: &Message, config: &Config| -> bool` (true delivers).
#[macro_export]
macro_rules! filter_plugin {
    ($keep:expr) => {
        struct FerrymqFilter;
        impl $crate::filter::Guest for FerrymqFilter {
            fn filter(messages: ::std::vec::Vec<u8>) -> ::std::vec::Vec<u8> {
                $crate::run_filter(&messages, $keep)
            }
        }
        $crate::filter::export_filter!(FerrymqFilter);
    };
}

/// Exports a route plugin from `|message: &Message, config: &Config| -> RouteDecision`.
#[macro_export]
macro_rules! route_plugin {
    ($decide:expr) => {
        struct FerrymqRoute;
        impl $crate::route::Guest for FerrymqRoute {
            fn route(message: ::std::vec::Vec<u8>) -> $crate::RouteDecision {
                $crate::run_route(&message, $decide)
            }
        }
        $crate::route::export_route!(FerrymqRoute);
    };
}

/// Exports a transaction-check plugin from
/// `|transaction_id: &str, message: &Message, config: &Config| -> Resolution`.
#[macro_export]
macro_rules! tx_check_plugin {
    ($check:expr) => {
        struct FerrymqTxCheck;
        impl $crate::tx_check::Guest for FerrymqTxCheck {
            fn check(
                transaction_id: ::std::string::String,
                message: ::std::vec::Vec<u8>,
            ) -> $crate::tx_check::Resolution {
                $crate::run_tx_check(&transaction_id, &message, $check)
            }
        }
        $crate::tx_check::export_tx_check!(FerrymqTxCheck);
    };
}
