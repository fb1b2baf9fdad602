/* Route: a message without an `enterpriseId` property is refused (the producer gets the reason),
 * one tagged `test` is dropped, every other one is stored with a `checked=yes` property added. */
#include "ferrymq_plugin.h"

void ferrymq_route(const ferrymq_message *message, ferrymq_route_decision *decision) {
  ferrymq_bytes id;
  if (!ferrymq_property(message, "enterpriseId", &id)) {
    ferrymq_reject(decision, "a message needs an enterpriseId property");
  } else if (ferrymq_eq(message->tag, "test")) {
    ferrymq_drop(decision, "test message");
  } else {
    ferrymq_set_property(decision, "checked", "yes");
  }
}
