/* The C SDK natively: the readers, and each world's path through the testing stand-ins. Built once
 * per world (scripts/test.sh):
 *   cc -DFERRYMQ_WORLD_FILTER -Isdk/c sdk/c/tests/test_sdk.c sdk/c/ferrymq_plugin.c sdk/c/ferrymq_testing.c */
#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ferrymq_testing.h"

static void readers_read_every_field_in_place(void) {
  const ferrymq_sample s[] = {
      {.topic = "inbox", .tag = "urgent", .keys = "k1 k2", .properties = {"note", "region", "regionCode", "N1", NULL},
       .body = "hello"},
      {.topic = "inbox"},
  };
  size_t len;
  uint8_t *buf = ferrymq_testing_batch(s, 2, false, 3, &len);
  ferrymq_batch b;
  ferrymq_message m;
  assert(ferrymq_batch_open(&b, buf, len) && b.count == 2);
  assert(ferrymq_batch_next(&b, &m));
  assert(ferrymq_eq(m.topic, "inbox") && ferrymq_eq(m.tag, "urgent") && ferrymq_eq(m.keys, "k1 k2"));
  assert(m.attempt == 3 && ferrymq_eq(m.body, "hello"));
  ferrymq_bytes v;
  assert(!ferrymq_property(&m, "region", &v)); /* a value is not a name */
  assert(ferrymq_property(&m, "regionCode", &v) && ferrymq_eq(v, "N1"));
  assert(!ferrymq_property(&m, "reg", &v));
  assert(ferrymq_batch_next(&b, &m) && m.tag.len == 0 && m.index == 1);
  assert(!ferrymq_batch_next(&b, &m) && !b.damaged);

  /* Damage: cut the last byte, or claim a third message. */
  assert(ferrymq_batch_open(&b, buf, len - 1));
  assert(ferrymq_batch_next(&b, &m) && !ferrymq_batch_next(&b, &m) && b.damaged);
  buf[0] = 3;
  assert(ferrymq_batch_open(&b, buf, len));
  while (ferrymq_batch_next(&b, &m)) {
  }
  assert(b.damaged);
  assert(!ferrymq_batch_open(&b, buf, 3));
  free(buf);
}

static void lists_are_comma_separated_and_trimmed(void) {
  ferrymq_bytes list = {(const uint8_t *)" E1, E22 ,E3", 12};
  assert(ferrymq_list_contains(list, (ferrymq_bytes){(const uint8_t *)"E22", 3}));
  assert(ferrymq_list_contains(list, (ferrymq_bytes){(const uint8_t *)"E3", 2}));
  assert(!ferrymq_list_contains(list, (ferrymq_bytes){(const uint8_t *)"E2", 2}));
  assert(!ferrymq_list_contains(list, (ferrymq_bytes){(const uint8_t *)"", 0}));
}

#ifdef FERRYMQ_WORLD_FILTER
/* Delivers listed enterprises' messages whose body mentions "keep". */
bool ferrymq_filter(const ferrymq_message *m) {
  ferrymq_bytes id, allowed, body;
  if (!ferrymq_property(m, "enterpriseId", &id) || !ferrymq_param("enterprise_ids", &allowed)) return false;
  return ferrymq_list_contains(allowed, id) && ferrymq_body(m, &body) && body.len >= 4 &&
         memcmp(body.ptr, "keep", 4) == 0;
}

static void world(void) {
  ferrymq_sample s[10];
  memset(s, 0, sizeof s);
  for (int i = 0; i < 10; i++) {
    s[i].topic = "t";
    s[i].properties[0] = "enterpriseId";
    s[i].properties[1] = i % 2 ? "E1" : "E2";
    s[i].body = i < 8 ? "keep me" : "drop me";
  }
  const char *const params[] = {"enterprise_ids", "E1", NULL};
  ferrymq_testing_params(params);
  bool keep[10];
  ferrymq_testing_filter(s, 10, keep);
  for (int i = 0; i < 10; i++) assert(keep[i] == (i % 2 == 1 && i < 8));
}
#endif

#ifdef FERRYMQ_WORLD_ROUTE
void ferrymq_route(const ferrymq_message *m, ferrymq_route_decision *d) {
  ferrymq_bytes region;
  if (ferrymq_property(m, "region", &region)) {
    ferrymq_redirect(d, "north");
    ferrymq_redirect(d, "south");
  } else if (ferrymq_eq(m->tag, "secret")) {
    ferrymq_reject(d, "no secrets");
  } else {
    ferrymq_set_tag(d, "seen");
    ferrymq_set_property(d, "checked", "yes");
    ferrymq_remove_property(d, "draft");
    ferrymq_set_body(d, (const uint8_t *)"new", 3);
  }
}

static void world(void) {
  ferrymq_route_decision d;
  const ferrymq_sample regional = {.topic = "t", .properties = {"region", "x", NULL}};
  ferrymq_testing_route(&regional, &d);
  assert(d.kind == FERRYMQ_REDIRECT && d.strings_len == 2 && strcmp(d.strings[1], "south") == 0);
  ferrymq_route_clear(&d);
  const ferrymq_sample secret = {.topic = "t", .tag = "secret"};
  ferrymq_testing_route(&secret, &d);
  assert(d.kind == FERRYMQ_REJECT && strcmp(d.reason, "no secrets") == 0);
  ferrymq_route_clear(&d);
  const ferrymq_sample plain = {.topic = "t"};
  ferrymq_testing_route(&plain, &d);
  assert(d.kind == FERRYMQ_ACCEPT && strcmp(d.tag, "seen") == 0 && d.set_len == 2 && d.strings_len == 1);
  assert(d.has_body && d.body_len == 3 && memcmp(d.body, "new", 3) == 0);
  ferrymq_route_clear(&d);
  assert(d.kind == FERRYMQ_ACCEPT && d.tag == NULL && d.set_len == 0);
}
#endif

#ifdef FERRYMQ_WORLD_TX_CHECK
ferrymq_resolution ferrymq_tx_check(ferrymq_bytes id, const ferrymq_message *m) {
  (void)m;
  return id.len && id.ptr[id.len - 1] == '1' ? FERRYMQ_COMMIT : FERRYMQ_ROLLBACK;
}

static void world(void) {
  const ferrymq_sample s = {.topic = "t"};
  assert(ferrymq_testing_tx_check("tx-1", &s) == FERRYMQ_COMMIT);
  assert(ferrymq_testing_tx_check("tx-2", &s) == FERRYMQ_ROLLBACK);
}
#endif

int main(void) {
  readers_read_every_field_in_place();
  lists_are_comma_separated_and_trimmed();
  world();
  ferrymq_log(FERRYMQ_WARN, "a line");
  assert(strcmp(ferrymq_testing_last_log(FERRYMQ_INFO), "a line") == 0 && ferrymq_testing_last_log(FERRYMQ_ERROR) == NULL);
  puts("C SDK tests passed");
  return 0;
}
