"""Transaction check: an orphaned transaction whose half message says `approval=granted` commits,
`approval=refused` rolls back; any other is left to the producer's own check-back."""

import ferrymq_plugin as fp


@fp.tx_check
def check(transaction_id: str, message: fp.Message, config: fp.Config) -> fp.Resolution:
    approval = message.property("approval")
    if approval == "granted":
        return fp.Resolution.COMMIT
    if approval == "refused":
        return fp.Resolution.ROLLBACK
    return fp.Resolution.UNKNOWN
