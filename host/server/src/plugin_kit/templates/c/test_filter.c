/* Unit tests of the policy, natively: make test (after `ferrymq plugin build`, which writes the SDK
 * into .ferrymq/c). */
#include <assert.h>
#include <stdio.h>

#include "ferrymq_testing.h"

int main(void) {
  const ferrymq_sample samples[] = {
      {.topic = "inbox", .properties = {"enterpriseId", "E1", NULL}},
      {.topic = "inbox", .properties = {"enterpriseId", "E2", NULL}},
      {.topic = "inbox", .properties = {"enterpriseId", "E3", NULL}},
      {.topic = "inbox"},
  };
  bool keep[4];
  const char *const params[] = {"enterprise_ids", "E1, E3", NULL};
  ferrymq_testing_params(params);
  ferrymq_testing_filter(samples, 4, keep);
  assert(keep[0] && !keep[1] && keep[2] && !keep[3]);
  ferrymq_testing_params(NULL);
  ferrymq_testing_filter(samples, 4, keep);
  assert(!keep[0] && !keep[1] && !keep[2] && !keep[3]);
  puts("policy tests passed");
  return 0;
}
