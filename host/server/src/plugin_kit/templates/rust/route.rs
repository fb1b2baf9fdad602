//! Route: a message without an `enterpriseId` property is refused (the producer gets the reason),
//! one tagged `test` is dropped, every other one is stored with a `checked=yes` property added.

use ferrymq_plugin_sdk::{Change, Config, Message, RouteDecision};

fn decide(message: &Message<'_>, _config: &Config) -> RouteDecision {
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
}

ferrymq_plugin_sdk::route_plugin!(decide);

#[cfg(test)]
mod tests {
    use ferrymq_plugin_sdk::RouteDecision;
    use ferrymq_plugin_sdk::testing::{Sample, route};

    #[test]
    fn each_kind_of_message_gets_its_decision() {
        let named = Sample::new("applications").property("enterpriseId", "E1");
        let accepted = route(super::decide, &named, &[]);
        let checked = vec![("checked".to_owned(), "yes".to_owned())];
        assert!(matches!(accepted, RouteDecision::Accept(c) if c.set_properties == checked));
        assert!(matches!(route(super::decide, &named.clone().tag("test"), &[]), RouteDecision::Drop(_)));
        assert!(matches!(route(super::decide, &Sample::new("applications"), &[]), RouteDecision::Reject(_)));
    }
}
