/* Transaction check: an orphaned transaction whose half message says `approval=granted` commits,
 * `approval=refused` rolls back; any other is left to the producer's own check-back. */
#include "ferrymq_plugin.h"

ferrymq_resolution ferrymq_tx_check(ferrymq_bytes transaction_id, const ferrymq_message *message) {
  (void)transaction_id;
  ferrymq_bytes approval;
  if (!ferrymq_property(message, "approval", &approval)) return FERRYMQ_UNKNOWN;
  if (ferrymq_eq(approval, "granted")) return FERRYMQ_COMMIT;
  if (ferrymq_eq(approval, "refused")) return FERRYMQ_ROLLBACK;
  return FERRYMQ_UNKNOWN;
}
