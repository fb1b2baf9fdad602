/* Native stand-ins for the broker (see ferrymq_testing.h). */
#include "ferrymq_testing.h"

#include <stdio.h>
#include <stdlib.h>

static const char *const *test_params;
static const ferrymq_sample *test_samples;
static char *last_log[FERRYMQ_ERROR + 1];

void ferrymq_testing_params(const char *const *pairs) {
  test_params = pairs;
}

void ferrymq_log(ferrymq_level level, const char *message) {
  fprintf(stderr, "[plugin %d] %s\n", (int)level, message);
  for (int l = 0; l <= (int)level; l++) {
    free(last_log[l]);
    size_t n = strlen(message) + 1;
    last_log[l] = memcpy(malloc(n), message, n);
  }
}

const char *ferrymq_testing_last_log(ferrymq_level level) {
  return last_log[level];
}

_Noreturn void ferrymq_fail(const char *reason) {
  fprintf(stderr, "the policy failed: %s\n", reason);
  abort();
}

bool ferrymq_param(const char *name, ferrymq_bytes *value) {
  for (const char *const *p = test_params; p && p[0] && p[1]; p += 2) {
    if (strcmp(p[0], name) == 0) {
      value->ptr = (const uint8_t *)p[1];
      value->len = strlen(p[1]);
      return true;
    }
  }
  return false;
}

bool ferrymq_body(const ferrymq_message *m, ferrymq_bytes *body) {
  if (!(m->flags & FERRYMQ_BODY_OMITTED)) {
    *body = m->body;
    return true;
  }
  if (!test_samples) return false;
  const char *text = test_samples[m->index].body ? test_samples[m->index].body : "";
  body->ptr = (const uint8_t *)text;
  body->len = strlen(text);
  return true;
}

typedef struct {
  uint8_t *buf;
  size_t len, cap;
} out_buf;

static void put(out_buf *o, const void *bytes, size_t n) {
  if (o->len + n > o->cap) {
    o->cap = (o->len + n) * 2;
    o->buf = realloc(o->buf, o->cap);
  }
  memcpy(o->buf + o->len, bytes, n);
  o->len += n;
}

static void put_u32(out_buf *o, uint32_t v) {
  uint8_t b[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
  put(o, b, 4);
}

static void put_str(out_buf *o, const char *s, size_t width) {
  size_t n = s ? strlen(s) : 0;
  if (width == 2) {
    uint8_t b[2] = {(uint8_t)n, (uint8_t)(n >> 8)};
    put(o, b, 2);
  } else {
    put_u32(o, (uint32_t)n);
  }
  if (n) put(o, s, n);
}

uint8_t *ferrymq_testing_batch(const ferrymq_sample *samples, size_t n, bool omit_bodies, uint32_t attempt,
                               size_t *len) {
  out_buf o = {0};
  put_u32(&o, (uint32_t)n);
  for (size_t i = 0; i < n; i++) {
    out_buf m = {0};
    const ferrymq_sample *s = &samples[i];
    put_u32(&m, omit_bodies ? FERRYMQ_BODY_OMITTED : 0);
    uint8_t zero[16] = {0}; /* born_ms, store_ms */
    put(&m, zero, 16);
    put_u32(&m, attempt);
    put_str(&m, s->topic, 2);
    put_str(&m, s->tag, 2);
    put_str(&m, s->keys, 2);
    out_buf props = {0};
    for (const char *const *p = s->properties; p[0] && p[1]; p += 2) {
      put(&props, p[0], strlen(p[0]));
      put(&props, "\x01", 1);
      put(&props, p[1], strlen(p[1]));
      put(&props, "\x02", 1);
    }
    put_u32(&m, (uint32_t)props.len);
    if (props.len) put(&m, props.buf, props.len);
    free(props.buf);
    put_str(&m, omit_bodies ? NULL : s->body, 4);
    put_u32(&o, (uint32_t)m.len);
    put(&o, m.buf, m.len);
    free(m.buf);
  }
  *len = o.len;
  return o.buf;
}

#ifdef FERRYMQ_WORLD_FILTER
void ferrymq_testing_filter(const ferrymq_sample *samples, size_t n, bool *keep) {
  size_t len;
  uint8_t *buf = ferrymq_testing_batch(samples, n, true, 1, &len);
  ferrymq_batch batch;
  ferrymq_message m;
  test_samples = samples;
  ferrymq_batch_open(&batch, buf, len);
  while (ferrymq_batch_next(&batch, &m)) keep[m.index] = ferrymq_filter(&m);
  test_samples = NULL;
  free(buf);
}
#endif

static inline bool one(const ferrymq_sample *sample, uint8_t **buf, ferrymq_message *m) {
  size_t len;
  ferrymq_batch batch;
  *buf = ferrymq_testing_batch(sample, 1, false, 0, &len);
  return ferrymq_batch_open(&batch, *buf, len) && ferrymq_batch_next(&batch, m);
}

#ifdef FERRYMQ_WORLD_ROUTE
void ferrymq_testing_route(const ferrymq_sample *sample, ferrymq_route_decision *decision) {
  uint8_t *buf;
  ferrymq_message m;
  memset(decision, 0, sizeof *decision);
  if (one(sample, &buf, &m)) ferrymq_route(&m, decision);
  free(buf);
}
#endif

#ifdef FERRYMQ_WORLD_TX_CHECK
ferrymq_resolution ferrymq_testing_tx_check(const char *transaction_id, const ferrymq_sample *sample) {
  uint8_t *buf;
  ferrymq_message m;
  ferrymq_resolution r = FERRYMQ_UNKNOWN;
  if (one(sample, &buf, &m)) r = ferrymq_tx_check((ferrymq_bytes){(const uint8_t *)transaction_id, strlen(transaction_id)}, &m);
  free(buf);
  return r;
}
#endif
