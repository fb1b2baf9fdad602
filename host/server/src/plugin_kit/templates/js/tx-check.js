// Transaction check: an orphaned transaction whose half message says `approval=granted` commits,
// `approval=refused` rolls back; any other is left to the producer's own check-back.

import { Resolution } from "./.ferrymq/js/ferrymq-plugin.js";

export default function check(transactionId, message, config) {
  switch (message.property("approval")) {
    case "granted":
      return Resolution.COMMIT;
    case "refused":
      return Resolution.ROLLBACK;
    default:
      return Resolution.UNKNOWN;
  }
}
