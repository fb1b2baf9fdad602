/* The glue between the broker and a C plugin: the canonical ABI of the `ferrymq:plugin@0.1.0`
 * worlds, written out for the few functions they have. Build it with the plugin and exactly one of
 * -DFERRYMQ_WORLD_FILTER, -DFERRYMQ_WORLD_ROUTE or -DFERRYMQ_WORLD_TX_CHECK (`ferrymq plugin
 * build` does). Built natively (unit tests), only the route decision functions are compiled;
 * ferrymq_testing.c stands in for the broker.
 *
 * Memory: arguments arrive in blocks the broker allocated with cabi_realloc, which the plugin owns
 * and frees; answers stay allocated until the broker's post-return call frees them.
 */
#include "ferrymq_plugin.h"

#include <stdlib.h>

#if defined(FERRYMQ_WORLD_FILTER) + defined(FERRYMQ_WORLD_ROUTE) + defined(FERRYMQ_WORLD_TX_CHECK) != 1
#error "define exactly one of FERRYMQ_WORLD_FILTER, FERRYMQ_WORLD_ROUTE, FERRYMQ_WORLD_TX_CHECK"
#endif

static inline void *alloc_or_trap(size_t n) {
  void *p = malloc(n ? n : 1);
  if (!p) __builtin_trap();
  return p;
}

#ifdef FERRYMQ_WORLD_ROUTE
static char *copy(const char *s) {
  size_t n = strlen(s) + 1;
  return memcpy(alloc_or_trap(n), s, n);
}

static void push(char ***list, size_t *len, const char *s) {
  *list = realloc(*list, (*len + 1) * sizeof **list);
  if (!*list) __builtin_trap();
  (*list)[(*len)++] = copy(s);
}

void ferrymq_route_clear(ferrymq_route_decision *d) {
  free(d->reason);
  free(d->tag);
  free(d->body);
  for (size_t i = 0; i < d->set_len; i++) free(d->set[i]);
  for (size_t i = 0; i < d->strings_len; i++) free(d->strings[i]);
  free(d->set);
  free(d->strings);
  memset(d, 0, sizeof *d);
}

void ferrymq_set_tag(ferrymq_route_decision *d, const char *tag) {
  free(d->tag);
  d->tag = copy(tag);
}

void ferrymq_set_property(ferrymq_route_decision *d, const char *name, const char *value) {
  push(&d->set, &d->set_len, name);
  push(&d->set, &d->set_len, value);
}

void ferrymq_remove_property(ferrymq_route_decision *d, const char *name) {
  if (d->kind == FERRYMQ_ACCEPT) push(&d->strings, &d->strings_len, name);
}

void ferrymq_set_body(ferrymq_route_decision *d, const uint8_t *body, size_t len) {
  free(d->body);
  d->body = memcpy(alloc_or_trap(len), body, len);
  d->body_len = len;
  d->has_body = true;
}

void ferrymq_redirect(ferrymq_route_decision *d, const char *topic) {
  if (d->kind != FERRYMQ_REDIRECT) {
    ferrymq_route_clear(d);
    d->kind = FERRYMQ_REDIRECT;
  }
  push(&d->strings, &d->strings_len, topic);
}

void ferrymq_reject(ferrymq_route_decision *d, const char *reason) {
  ferrymq_route_clear(d);
  d->kind = FERRYMQ_REJECT;
  d->reason = copy(reason);
}

void ferrymq_drop(ferrymq_route_decision *d, const char *reason) {
  ferrymq_route_clear(d);
  d->kind = FERRYMQ_DROP;
  d->reason = copy(reason);
}
#endif

#if defined(__wasm__)
#define FERRYMQ_EXPORT(name) __attribute__((export_name(name)))
#define FERRYMQ_IMPORT(module, name) __attribute__((import_module(module), import_name(name)))

FERRYMQ_IMPORT("ferrymq:plugin/host@0.1.0", "log")
extern void ferrymq_host_log(int32_t level, const char *ptr, size_t len);
/* list<tuple<string, string>>: the broker writes (pointer, length) into ret. */
FERRYMQ_IMPORT("ferrymq:plugin/host@0.1.0", "config")
extern void ferrymq_host_config(uint32_t *ret);
#ifdef FERRYMQ_WORLD_FILTER
/* option<list<u8>>: tag byte at 0, pointer at 4, length at 8. */
FERRYMQ_IMPORT("ferrymq:plugin/batch@0.1.0", "body")
extern void ferrymq_host_body(uint32_t index, uint8_t *ret);
#endif

FERRYMQ_EXPORT("cabi_realloc")
void *cabi_realloc(void *old, size_t old_size, size_t align, size_t new_size) {
  (void)old_size;
  if (new_size == 0) return (void *)align;
  void *p = realloc(old, new_size);
  if (!p) __builtin_trap();
  return p;
}

/* Blocks to free when the current call returns (bodies fetched from the broker). */
static void **call_blocks;
static size_t call_blocks_len, call_blocks_cap;

#ifdef FERRYMQ_WORLD_FILTER
static void *own(void *block) {
  if (call_blocks_len == call_blocks_cap) {
    call_blocks_cap = call_blocks_cap ? call_blocks_cap * 2 : 8;
    call_blocks = realloc(call_blocks, call_blocks_cap * sizeof *call_blocks);
    if (!call_blocks) __builtin_trap();
  }
  call_blocks[call_blocks_len++] = block;
  return block;
}
#endif

static void end_call(void) {
  for (size_t i = 0; i < call_blocks_len; i++) free(call_blocks[i]);
  call_blocks_len = 0;
}

void ferrymq_log(ferrymq_level level, const char *message) {
  ferrymq_host_log((int32_t)level, message, strlen(message));
}

_Noreturn void ferrymq_fail(const char *reason) {
  static const char prefix[] = "the policy failed: ";
  size_t n = strlen(reason);
  char *line = alloc_or_trap(sizeof prefix + n);
  memcpy(line, prefix, sizeof prefix - 1);
  memcpy(line + sizeof prefix - 1, reason, n + 1);
  ferrymq_log(FERRYMQ_ERROR, line);
  __builtin_trap();
}

/* The binding's parameters: (name, value) pairs, fetched once (they do not change). */
typedef struct {
  uint32_t name, name_len, value, value_len;
} ferrymq_pair;
static const ferrymq_pair *params;
static size_t params_len;
static bool params_read;

bool ferrymq_param(const char *name, ferrymq_bytes *value) {
  /* Policies ask for the same parameter for every message, usually by a string literal: the last
   * answer is kept by the name's address (parameters do not change for an instance). */
  static const char *last_name;
  static ferrymq_bytes last_value;
  static bool last_found;
  if (name == last_name) {
    *value = last_value;
    return last_found;
  }
  if (!params_read) {
    uint32_t ret[2];
    ferrymq_host_config(ret);
    params = (const ferrymq_pair *)(uintptr_t)ret[0];
    params_len = ret[1];
    params_read = true;
  }
  for (size_t i = 0; i < params_len; i++) {
    ferrymq_bytes n = {(const uint8_t *)(uintptr_t)params[i].name, params[i].name_len};
    if (ferrymq_eq(n, name)) {
      value->ptr = (const uint8_t *)(uintptr_t)params[i].value;
      value->len = params[i].value_len;
      last_name = name, last_value = *value, last_found = true;
      return true;
    }
  }
  last_name = name, last_found = false;
  return false;
}

bool ferrymq_body(const ferrymq_message *m, ferrymq_bytes *body) {
  if (!(m->flags & FERRYMQ_BODY_OMITTED)) {
    *body = m->body;
    return true;
  }
#ifdef FERRYMQ_WORLD_FILTER
  uint8_t ret[12] __attribute__((aligned(4)));
  ferrymq_host_body(m->index, ret);
  if (ret[0] == 0) return false;
  body->ptr = own((void *)(uintptr_t)ferrymq_read_u32(ret + 4));
  body->len = ferrymq_read_u32(ret + 8);
  return true;
#else
  return false;
#endif
}

#ifdef FERRYMQ_WORLD_FILTER
static uint32_t filter_ret[2];

/* filter: func(messages: list<u8>) -> list<u8> */
FERRYMQ_EXPORT("filter")
uint32_t *ferrymq_export_filter(uint8_t *ptr, size_t len) {
  ferrymq_batch batch;
  ferrymq_message m;
  uint8_t *bits = NULL;
  size_t n = 0;
  if (ferrymq_batch_open(&batch, ptr, len)) {
    n = (batch.count + 7) / 8;
    bits = calloc(n ? n : 1, 1);
    if (!bits) __builtin_trap();
    while (ferrymq_batch_next(&batch, &m)) {
      if (ferrymq_filter(&m)) bits[m.index / 8] |= (uint8_t)(1u << (m.index % 8));
    }
  }
  if (batch.damaged) {
    ferrymq_log(FERRYMQ_ERROR, "the broker sent a batch this SDK cannot read");
    n = 0;
  }
  end_call();
  free(ptr);
  filter_ret[0] = (uint32_t)(uintptr_t)bits;
  filter_ret[1] = (uint32_t)n;
  return filter_ret;
}

FERRYMQ_EXPORT("cabi_post_filter")
void ferrymq_post_filter(uint32_t *ret) {
  free((void *)(uintptr_t)ret[0]);
}
#endif

#ifdef FERRYMQ_WORLD_ROUTE
static ferrymq_route_decision decision;
/* The strings of a list, as the (pointer, length) pairs the broker reads. */
static uint32_t *slices;
/* route-decision: tag byte at 0, payload from 4 (change: tag option at 4, set-properties at 16,
 * remove-properties at 24, body option at 32); 44 bytes. */
static uint8_t route_ret[44] __attribute__((aligned(4)));

static void put32(uint8_t *at, uint32_t v) {
  memcpy(at, &v, 4);
}

static uint32_t *as_slices(char **strings, size_t n) {
  uint32_t *out = alloc_or_trap(2 * n * sizeof *out);
  for (size_t i = 0; i < n; i++) {
    out[2 * i] = (uint32_t)(uintptr_t)strings[i];
    out[2 * i + 1] = (uint32_t)strlen(strings[i]);
  }
  return out;
}

/* route: func(message: list<u8>) -> route-decision */
FERRYMQ_EXPORT("route")
uint8_t *ferrymq_export_route(uint8_t *ptr, size_t len) {
  ferrymq_route_clear(&decision);
  ferrymq_batch batch;
  ferrymq_message m;
  if (ferrymq_batch_open(&batch, ptr, len) && ferrymq_batch_next(&batch, &m)) {
    ferrymq_route(&m, &decision);
  } else {
    ferrymq_reject(&decision, "the broker sent a message this plugin cannot read");
  }
  end_call();
  free(ptr);
  memset(route_ret, 0, sizeof route_ret);
  route_ret[0] = (uint8_t)decision.kind;
  switch (decision.kind) {
  case FERRYMQ_ACCEPT: {
    if (decision.tag) {
      route_ret[4] = 1;
      put32(route_ret + 8, (uint32_t)(uintptr_t)decision.tag);
      put32(route_ret + 12, (uint32_t)strlen(decision.tag));
    }
    /* One block: the set pairs (a tuple of two slices each), then the removed names. */
    slices = as_slices(decision.set, decision.set_len);
    uint32_t *removed = as_slices(decision.strings, decision.strings_len);
    put32(route_ret + 16, (uint32_t)(uintptr_t)slices);
    put32(route_ret + 20, (uint32_t)(decision.set_len / 2));
    put32(route_ret + 24, (uint32_t)(uintptr_t)removed);
    put32(route_ret + 28, (uint32_t)decision.strings_len);
    if (decision.has_body) {
      route_ret[32] = 1;
      put32(route_ret + 36, (uint32_t)(uintptr_t)decision.body);
      put32(route_ret + 40, (uint32_t)decision.body_len);
    }
    break;
  }
  case FERRYMQ_REDIRECT:
    slices = as_slices(decision.strings, decision.strings_len);
    put32(route_ret + 4, (uint32_t)(uintptr_t)slices);
    put32(route_ret + 8, (uint32_t)decision.strings_len);
    break;
  default:
    put32(route_ret + 4, (uint32_t)(uintptr_t)decision.reason);
    put32(route_ret + 8, (uint32_t)strlen(decision.reason));
  }
  return route_ret;
}

FERRYMQ_EXPORT("cabi_post_route")
void ferrymq_post_route(uint8_t *ret) {
  if (ret[0] == FERRYMQ_ACCEPT) free((void *)(uintptr_t)ferrymq_read_u32(ret + 24));
  free(slices);
  slices = NULL;
  ferrymq_route_clear(&decision);
}
#endif

#ifdef FERRYMQ_WORLD_TX_CHECK
/* check: func(transaction-id: string, message: list<u8>) -> resolution */
FERRYMQ_EXPORT("check")
int32_t ferrymq_export_check(uint8_t *id, size_t id_len, uint8_t *ptr, size_t len) {
  ferrymq_batch batch;
  ferrymq_message m;
  ferrymq_resolution r = FERRYMQ_UNKNOWN;
  if (ferrymq_batch_open(&batch, ptr, len) && ferrymq_batch_next(&batch, &m)) {
    r = ferrymq_tx_check((ferrymq_bytes){id, id_len}, &m);
  }
  end_call();
  free(id);
  free(ptr);
  return (int32_t)r;
}
#endif
#endif /* __wasm__ */
