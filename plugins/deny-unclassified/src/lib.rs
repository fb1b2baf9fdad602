//! Route: refuses messages that carry no `classification` property; the producer sees why.

use ferrymq_plugin_sdk::{Change, RouteDecision};

ferrymq_plugin_sdk::route_plugin!(|message, _config| match message.property("classification") {
    Some(c) if !c.trim().is_empty() =>
        RouteDecision::Accept(Change { tag: None, set_properties: vec![], remove_properties: vec![], body: None }),
    _ => RouteDecision::Reject("messages must carry a classification property".into()),
});
