// Transaction check: an orphaned transaction whose half message says `approval=granted` commits,
// `approval=refused` rolls back, and any other is left to the producer's own check-back — so a
// department's approval decides without waiting for the producer.

import { Resolution } from "./.ferrymq/js/ferrymq-plugin.js";

const OUTCOMES = { granted: Resolution.COMMIT, refused: Resolution.ROLLBACK };

export default function check(transactionId, message, config) {
  return OUTCOMES[message.property("approval")] ?? Resolution.UNKNOWN;
}
