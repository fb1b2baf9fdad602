//! Filter: delivers a message to the consumer group only when its `enterpriseId` property is one of
//! the binding's `enterprise_ids` parameter (comma separated); the rest are withheld from the group.

ferrymq_plugin_sdk::filter_plugin!(|message, config| {
    message.property("enterpriseId").is_some_and(|id| config.list("enterprise_ids").any(|allowed| allowed == id))
});
