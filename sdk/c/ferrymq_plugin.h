/* Write ferrymq policy plugins in C.
 *
 * A plugin implements one function, the one of its world:
 *
 *   bool ferrymq_filter(const ferrymq_message *m);                       world filter: true delivers
 *   void ferrymq_route(const ferrymq_message *m, ferrymq_route_decision *d);   world route
 *   ferrymq_resolution ferrymq_tx_check(ferrymq_bytes transaction_id, const ferrymq_message *m);
 *
 * `ferrymq plugin build` compiles it with ferrymq_plugin.c (the canonical-ABI glue, built for the
 * project's world with -DFERRYMQ_WORLD_FILTER, _ROUTE or _TX_CHECK) for wasm32-wasi and wraps the
 * module into a component. The readers below are static inline and read the broker's batch
 * encoding in place (docs/plugins.md, "The batch encoding"); nothing is copied or NUL-terminated.
 */
#ifndef FERRYMQ_PLUGIN_H
#define FERRYMQ_PLUGIN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* Bytes or UTF-8 text borrowed from the batch: not NUL-terminated. */
typedef struct {
  const uint8_t *ptr;
  size_t len;
} ferrymq_bytes;

typedef struct {
  uint32_t index;
  uint32_t flags;
  int64_t born_ms;
  int64_t store_ms;
  /* 1 on first delivery (filters); 0 for messages not stored yet (route, tx-check). */
  uint32_t attempt;
  ferrymq_bytes topic;
  /* Empty when the message has none. */
  ferrymq_bytes tag;
  /* Separated by spaces. */
  ferrymq_bytes keys;
  /* name\x01value\x02...: read them with ferrymq_property. */
  ferrymq_bytes properties;
  /* Empty when the broker left it out (filters): read it with ferrymq_body. */
  ferrymq_bytes body;
} ferrymq_message;

#define FERRYMQ_BODY_OMITTED 1u

typedef enum { FERRYMQ_TRACE, FERRYMQ_DEBUG, FERRYMQ_INFO, FERRYMQ_WARN, FERRYMQ_ERROR } ferrymq_level;
typedef enum { FERRYMQ_COMMIT, FERRYMQ_ROLLBACK, FERRYMQ_UNKNOWN } ferrymq_resolution;

static inline uint32_t ferrymq_read_u32(const uint8_t *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static inline int64_t ferrymq_read_i64(const uint8_t *p) {
  return (int64_t)((uint64_t)ferrymq_read_u32(p) | (uint64_t)ferrymq_read_u32(p + 4) << 32);
}

/* Reading a batch: open, then next until it answers false. */
typedef struct {
  const uint8_t *next;
  const uint8_t *end;
  uint32_t count;
  uint32_t index;
  /* Set when the batch ended early: it does not follow the encoding. */
  bool damaged;
} ferrymq_batch;

static inline bool ferrymq_batch_open(ferrymq_batch *b, const uint8_t *buf, size_t len) {
  b->damaged = len < 4;
  b->count = b->damaged ? 0 : ferrymq_read_u32(buf);
  b->next = b->damaged ? buf : buf + 4;
  b->end = buf + len;
  b->index = 0;
  return !b->damaged;
}

static inline bool ferrymq_take(const uint8_t **at, const uint8_t *end, size_t width, ferrymq_bytes *out) {
  if ((size_t)(end - *at) < width) return false;
  size_t n = width == 2 ? (size_t)((*at)[0] | (*at)[1] << 8) : ferrymq_read_u32(*at);
  *at += width;
  if ((size_t)(end - *at) < n) return false;
  out->ptr = *at;
  out->len = n;
  *at += n;
  return true;
}

static inline bool ferrymq_batch_next(ferrymq_batch *b, ferrymq_message *m) {
  if (b->index >= b->count) return false;
  ferrymq_bytes whole;
  if (!ferrymq_take(&b->next, b->end, 4, &whole) || whole.len < 24) {
    b->damaged = true;
    return false;
  }
  const uint8_t *at = whole.ptr + 24, *end = whole.ptr + whole.len;
  m->index = b->index;
  m->flags = ferrymq_read_u32(whole.ptr);
  m->born_ms = ferrymq_read_i64(whole.ptr + 4);
  m->store_ms = ferrymq_read_i64(whole.ptr + 12);
  m->attempt = ferrymq_read_u32(whole.ptr + 20);
  if (!ferrymq_take(&at, end, 2, &m->topic) || !ferrymq_take(&at, end, 2, &m->tag) ||
      !ferrymq_take(&at, end, 2, &m->keys) || !ferrymq_take(&at, end, 4, &m->properties) ||
      !ferrymq_take(&at, end, 4, &m->body)) {
    b->damaged = true;
    return false;
  }
  b->index++;
  return true;
}

/* Whether `s` holds exactly the NUL-terminated `text`. */
static inline bool ferrymq_eq(ferrymq_bytes s, const char *text) {
  size_t n = strlen(text);
  return s.len == n && (n == 0 || memcmp(s.ptr, text, n) == 0);
}

/* A property by name (user properties and the broker's own, such as UNIQ_KEY): each property's
 * name is compared in place, and only the value found is measured. Plain loops rather than libc
 * calls, so that the compiler inlines and vectorizes them. */
static inline bool ferrymq_property(const ferrymq_message *m, const char *name, ferrymq_bytes *value) {
  size_t n = strlen(name);
  const uint8_t *at = m->properties.ptr, *end = m->properties.ptr + m->properties.len;
  while (at < end) {
    size_t i = 0;
    while (i < n && at + i < end && at[i] == (uint8_t)name[i]) i++;
    if (i == n && at + n < end && at[n] == 0x01) {
      const uint8_t *v = at + n + 1, *stop = v;
      while (stop < end && *stop != 0x02) stop++;
      value->ptr = v;
      value->len = (size_t)(stop - v);
      return true;
    }
    while (at < end && *at != 0x02) at++;
    at++;
  }
  return false;
}

/* Whether the comma-separated `list` holds `item` (items trimmed of spaces). */
static inline bool ferrymq_list_contains(ferrymq_bytes list, ferrymq_bytes item) {
  const uint8_t *at = list.ptr, *end = list.ptr + list.len;
  if (item.len == 0) return false;
  for (;;) {
    const uint8_t *stop = at;
    while (stop < end && *stop != ',') stop++;
    const uint8_t *lo = at, *hi = stop;
    while (lo < hi && *lo == ' ') lo++;
    while (hi > lo && hi[-1] == ' ') hi--;
    if ((size_t)(hi - lo) == item.len) {
      size_t i = 0;
      while (i < item.len && lo[i] == item.ptr[i]) i++;
      if (i == item.len) return true;
    }
    if (stop == end) return false;
    at = stop + 1;
  }
}

/* Provided by ferrymq_plugin.c. */

/* Writes to the broker's log (rate-limited by the broker). */
void ferrymq_log(ferrymq_level level, const char *message);
/* A parameter of the binding. */
bool ferrymq_param(const char *name, ferrymq_bytes *value);
/* The body: in place when the batch carries it, else asked of the broker (filters); valid until
 * the call returns. */
bool ferrymq_body(const ferrymq_message *m, ferrymq_bytes *body);
/* Fails the call with `reason` as its one-line cause in the broker's log. */
_Noreturn void ferrymq_fail(const char *reason);

/* A route's decision: accept unchanged unless one of the functions below says otherwise (read
 * its fields in tests; change it only through them). */
typedef enum { FERRYMQ_ACCEPT, FERRYMQ_REDIRECT, FERRYMQ_REJECT, FERRYMQ_DROP } ferrymq_route_kind;
typedef struct ferrymq_route_decision {
  ferrymq_route_kind kind;
  char *reason;         /* reject, drop */
  char *tag;            /* accept: the new tag, or NULL */
  uint8_t *body;        /* accept: the new body when has_body */
  size_t body_len;
  bool has_body;
  char **set;           /* accept: name, value, name, value, ... */
  size_t set_len;       /* entries in `set` (twice the properties) */
  char **strings;       /* accept: names removed; redirect: topics */
  size_t strings_len;
} ferrymq_route_decision;
/* Frees what a decision holds and makes it "accept unchanged" again. */
void ferrymq_route_clear(ferrymq_route_decision *d);
void ferrymq_set_tag(ferrymq_route_decision *d, const char *tag);
void ferrymq_set_property(ferrymq_route_decision *d, const char *name, const char *value);
void ferrymq_remove_property(ferrymq_route_decision *d, const char *name);
void ferrymq_set_body(ferrymq_route_decision *d, const uint8_t *body, size_t len);
/* Store the message (unchanged) in `topic` instead; call again for more topics. */
void ferrymq_redirect(ferrymq_route_decision *d, const char *topic);
/* Refuse the send; the producer gets the reason. */
void ferrymq_reject(ferrymq_route_decision *d, const char *reason);
/* Acknowledge the send but store nothing; the broker logs and counts the drop. */
void ferrymq_drop(ferrymq_route_decision *d, const char *reason);

/* What the plugin implements: the function of its world. */
bool ferrymq_filter(const ferrymq_message *message);
void ferrymq_route(const ferrymq_message *message, ferrymq_route_decision *decision);
ferrymq_resolution ferrymq_tx_check(ferrymq_bytes transaction_id, const ferrymq_message *message);

#endif
