//! Filter: delivers only messages whose `enterpriseId` property is in the binding's
//! `enterprise_ids` parameter (comma-separated) — each enterprise's inbox sees its own messages.

use std::sync::OnceLock;

/// The allowed ids, parsed once per instance (parameters do not change for an instance).
static ALLOWED: OnceLock<Vec<String>> = OnceLock::new();

ferrymq_plugin_sdk::filter_plugin!(|message, config| {
    let allowed = ALLOWED.get_or_init(|| config.list("enterprise_ids").map(str::to_owned).collect());
    message.property("enterpriseId").is_some_and(|id| allowed.iter().any(|a| a == id))
});
