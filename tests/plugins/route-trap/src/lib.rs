//! Fixture: a route that panics on every message (a trap in the host's eyes), so a test can see what
//! a broken route policy does to the messages it should judge.

use ferrymq_plugin_sdk::RouteDecision;

ferrymq_plugin_sdk::route_plugin!(|message, _config| -> RouteDecision {
    panic!("refusing message on topic {}", message.topic())
});
