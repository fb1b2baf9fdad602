/* Unit tests of the policy, natively: make test (after `ferrymq plugin build`, which writes the SDK
 * into .ferrymq/c). */
#include <assert.h>
#include <stdio.h>

#include "ferrymq_testing.h"

int main(void) {
  const ferrymq_sample granted = {.topic = "grants", .properties = {"approval", "granted", NULL}};
  const ferrymq_sample refused = {.topic = "grants", .properties = {"approval", "refused", NULL}};
  const ferrymq_sample open = {.topic = "grants"};
  assert(ferrymq_testing_tx_check("tx-1", &granted) == FERRYMQ_COMMIT);
  assert(ferrymq_testing_tx_check("tx-2", &refused) == FERRYMQ_ROLLBACK);
  assert(ferrymq_testing_tx_check("tx-3", &open) == FERRYMQ_UNKNOWN);
  puts("policy tests passed");
  return 0;
}
