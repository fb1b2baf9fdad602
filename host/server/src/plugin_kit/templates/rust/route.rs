//! Route: a message without an `enterpriseId` property is refused (the producer gets the reason),
//! one tagged `test` is dropped, every other one is stored with a `checked=yes` property added.

use ferrymq_plugin_sdk::{Change, RouteDecision};

ferrymq_plugin_sdk::route_plugin!(|message, _config| {
    if message.property("enterpriseId").is_none() {
        return RouteDecision::Reject("a message needs an enterpriseId property".into());
    }
    if message.tag() == Some("test") {
        return RouteDecision::Drop("test message".into());
    }
    RouteDecision::Accept(Change {
        tag: None,
        set_properties: vec![("checked".into(), "yes".into())],
        remove_properties: Vec::new(),
        body: None,
    })
});
