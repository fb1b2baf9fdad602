/* Filter: delivers only messages whose `enterpriseId` property is in the binding's `enterprise_ids`
 * parameter (comma separated) — the C twin of plugins/enterprise-inbox (Rust), python/ and js/:
 * same parameter, same decisions. */
#include "ferrymq_plugin.h"

bool ferrymq_filter(const ferrymq_message *message) {
  ferrymq_bytes id, allowed;
  return ferrymq_property(message, "enterpriseId", &id) && ferrymq_param("enterprise_ids", &allowed) &&
         ferrymq_list_contains(allowed, id);
}
