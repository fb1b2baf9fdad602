//! Route: a message with a `region` property goes to `<topic>-<region>` instead of its topic; one
//! without is stored as sent.

use ferrymq_plugin_sdk::{Change, RouteDecision};

ferrymq_plugin_sdk::route_plugin!(|message, _config| match message.property("region") {
    Some(region) if !region.is_empty() => RouteDecision::Redirect(vec![format!("{}-{region}", message.topic())]),
    _ => RouteDecision::Accept(Change { tag: None, set_properties: vec![], remove_properties: vec![], body: None }),
});
