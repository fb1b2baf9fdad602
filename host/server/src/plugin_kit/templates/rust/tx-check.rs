//! Transaction check: an orphaned transaction whose half message says `approval=granted` commits,
//! `approval=refused` rolls back; any other is left to the producer's own check-back.

use ferrymq_plugin_sdk::Resolution;

ferrymq_plugin_sdk::tx_check_plugin!(|_transaction_id, message, _config| {
    match message.property("approval") {
        Some("granted") => Resolution::Commit,
        Some("refused") => Resolution::Rollback,
        _ => Resolution::Unknown,
    }
});
