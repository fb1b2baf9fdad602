//! Transaction check: an orphaned transaction whose half message says `approval=granted` commits,
//! `approval=refused` rolls back; any other is left to the producer's own check-back.

use ferrymq_plugin_sdk::{Config, Message, Resolution};

fn check(_transaction_id: &str, message: &Message<'_>, _config: &Config) -> Resolution {
    match message.property("approval") {
        Some("granted") => Resolution::Commit,
        Some("refused") => Resolution::Rollback,
        _ => Resolution::Unknown,
    }
}

ferrymq_plugin_sdk::tx_check_plugin!(check);

#[cfg(test)]
mod tests {
    use ferrymq_plugin_sdk::Resolution;
    use ferrymq_plugin_sdk::testing::{Sample, tx_check};

    #[test]
    fn the_approval_property_decides() {
        let grant = |approval: &str| Sample::new("grants").property("approval", approval);
        assert_eq!(tx_check(super::check, "tx-1", &grant("granted"), &[]), Resolution::Commit);
        assert_eq!(tx_check(super::check, "tx-2", &grant("refused"), &[]), Resolution::Rollback);
        assert_eq!(tx_check(super::check, "tx-3", &Sample::new("grants"), &[]), Resolution::Unknown);
    }
}
