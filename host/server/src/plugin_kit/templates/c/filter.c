/* Filter: delivers a message to the consumer group only when its `enterpriseId` property is one of
 * the binding's `enterprise_ids` parameter (comma separated); the rest are withheld from the group. */
#include "ferrymq_plugin.h"

bool ferrymq_filter(const ferrymq_message *message) {
  ferrymq_bytes id, allowed;
  return ferrymq_property(message, "enterpriseId", &id) && ferrymq_param("enterprise_ids", &allowed) &&
         ferrymq_list_contains(allowed, id);
}
