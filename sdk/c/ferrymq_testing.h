/* Unit-testing a C policy natively (the system's C compiler, no broker, no Wasm): samples encoded
 * as the broker encodes them, read with the same readers, with stand-ins for the broker's log,
 * parameters and body fetches. Build the test with the policy, ferrymq_plugin.c (for the route
 * decision functions) and ferrymq_testing.c, and the world's -DFERRYMQ_WORLD_... define.
 */
#ifndef FERRYMQ_TESTING_H
#define FERRYMQ_TESTING_H

#include "ferrymq_plugin.h"

#define FERRYMQ_SAMPLE_PROPERTIES_MAX 8

/* A message to test with; unset fields are empty. */
typedef struct {
  const char *topic;
  const char *tag;
  const char *keys; /* separated by spaces */
  /* name, value, name, value, ..., NULL */
  const char *properties[2 * FERRYMQ_SAMPLE_PROPERTIES_MAX + 1];
  const char *body;
} ferrymq_sample;

/* The binding's parameters for what follows: name, value, ..., NULL (NULL alone: none). */
void ferrymq_testing_params(const char *const *pairs);
/* The samples in the batch encoding (malloc'd; *len set), bodies left out when `omit_bodies`. */
uint8_t *ferrymq_testing_batch(const ferrymq_sample *samples, size_t n, bool omit_bodies, uint32_t attempt, size_t *len);
/* What ferrymq_filter decides for each sample (one batch, bodies fetched on demand). */
void ferrymq_testing_filter(const ferrymq_sample *samples, size_t n, bool *keep);
/* What ferrymq_route decides for a sample; clear the decision with ferrymq_route_clear. */
void ferrymq_testing_route(const ferrymq_sample *sample, ferrymq_route_decision *decision);
/* What ferrymq_tx_check resolves for a sample's transaction. */
ferrymq_resolution ferrymq_testing_tx_check(const char *transaction_id, const ferrymq_sample *sample);
/* The last line the policy logged at `level` or above, or NULL. */
const char *ferrymq_testing_last_log(ferrymq_level level);

#endif
