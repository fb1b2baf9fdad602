//! Filter: delivers only messages whose `enterpriseId` property is in the binding's
//! `enterprise_ids` parameter (comma-separated) — each enterprise's inbox sees its own messages.

ferrymq_plugin_sdk::filter_plugin!(|message, config| {
    message.property("enterpriseId").is_some_and(|id| config.list("enterprise_ids").any(|allowed| allowed == id))
});
