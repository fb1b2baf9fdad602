//! Filter: delivers a message to the consumer group only when its `enterpriseId` property is one of
//! the binding's `enterprise_ids` parameter (comma separated); the rest are withheld from the group.

use ferrymq_plugin_sdk::{Config, Message};

fn keep(message: &Message<'_>, config: &Config) -> bool {
    message.property("enterpriseId").is_some_and(|id| config.list("enterprise_ids").any(|allowed| allowed == id))
}

ferrymq_plugin_sdk::filter_plugin!(keep);

#[cfg(test)]
mod tests {
    use ferrymq_plugin_sdk::testing::{Sample, filter};

    #[test]
    fn only_the_listed_enterprises_messages_are_delivered() {
        let samples = [
            Sample::new("inbox").property("enterpriseId", "E1"),
            Sample::new("inbox").property("enterpriseId", "E2"),
            Sample::new("inbox").property("enterpriseId", "E3"),
            Sample::new("inbox"),
        ];
        assert_eq!(filter(super::keep, &samples, &[("enterprise_ids", "E1, E3")]), [true, false, true, false]);
        assert_eq!(filter(super::keep, &samples, &[]), [false; 4], "no list, no delivery");
    }
}
