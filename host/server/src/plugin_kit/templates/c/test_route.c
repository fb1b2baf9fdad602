/* Unit tests of the policy, natively: make test (after `ferrymq plugin build`, which writes the SDK
 * into .ferrymq/c). */
#include <assert.h>
#include <stdio.h>
#include <string.h>

#include "ferrymq_testing.h"

int main(void) {
  ferrymq_route_decision d;
  const ferrymq_sample named = {.topic = "applications", .properties = {"enterpriseId", "E1", NULL}};
  ferrymq_testing_route(&named, &d);
  assert(d.kind == FERRYMQ_ACCEPT && d.set_len == 2 && strcmp(d.set[0], "checked") == 0);
  ferrymq_route_clear(&d);
  const ferrymq_sample test = {.topic = "applications", .tag = "test", .properties = {"enterpriseId", "E1", NULL}};
  ferrymq_testing_route(&test, &d);
  assert(d.kind == FERRYMQ_DROP);
  ferrymq_route_clear(&d);
  const ferrymq_sample anonymous = {.topic = "applications"};
  ferrymq_testing_route(&anonymous, &d);
  assert(d.kind == FERRYMQ_REJECT && strstr(d.reason, "enterpriseId"));
  ferrymq_route_clear(&d);
  puts("policy tests passed");
  return 0;
}
