// Write ferrymq policy plugins in JavaScript.
//
// A plugin is one module whose default export is the policy function of its world:
//
//   // filter: (message, config) => boolean (true delivers the message to the group)
//   export default function keep(message, config) {
//     return config.list("enterprise_ids").includes(message.property("enterpriseId"));
//   }
//
// A route returns accept(...), redirect([...]), reject(reason) or drop(reason); a tx-check returns
// Resolution.COMMIT, ROLLBACK or UNKNOWN. `ferrymq plugin build` wraps the module into a component
// (componentize-qjs, QuickJS); `testing.js` runs the function on sample messages under Node.js.
// The batch encoding is in docs/plugins.md ("The batch encoding").

// flags: bit 0 means the broker left the body out; a filter asks for it with batch.body(index).
const FLAG_BODY_OMITTED = 1;

export const LEVELS = ["trace", "debug", "info", "warn", "error"];

/** The buffer does not follow the batch encoding. */
export class MalformedBatch extends Error {}

// UTF-8 to string: the component's JavaScript engine (QuickJS) has no TextDecoder.
function utf8(bytes) {
  if (typeof TextDecoder !== "undefined") return new TextDecoder().decode(bytes);
  const ascii = latin1(bytes);
  if (!/[\x80-\xff]/.test(ascii)) return ascii;
  let out = "";
  for (let i = 0; i < bytes.length; ) {
    const b = bytes[i];
    let cp;
    let n;
    if (b < 0x80) [cp, n] = [b, 1];
    else if (b >= 0xc2 && b < 0xe0) [cp, n] = [b & 0x1f, 2];
    else if (b >= 0xe0 && b < 0xf0) [cp, n] = [b & 0x0f, 3];
    else if (b >= 0xf0 && b < 0xf5) [cp, n] = [b & 0x07, 4];
    else [cp, n] = [0xfffd, 1];
    if (n > 1) {
      if (i + n > bytes.length) [cp, n] = [0xfffd, bytes.length - i];
      else {
        for (let k = 1; k < n; k++) {
          const c = bytes[i + k];
          if ((c & 0xc0) !== 0x80) {
            [cp, n] = [0xfffd, k];
            break;
          }
          cp = (cp << 6) | (c & 0x3f);
        }
      }
    }
    out += String.fromCodePoint(cp > 0x10ffff ? 0xfffd : cp);
    i += n;
  }
  return out;
}

// Bytes as a string of one character a byte, by the engine's own code (chunked: argument lists
// are bounded).
function latin1(bytes) {
  let out = "";
  for (let i = 0; i < bytes.length; i += 8192) {
    out += String.fromCharCode.apply(null, bytes.subarray(i, i + 8192));
  }
  return out;
}

// string to UTF-8 (the engine has no TextEncoder either).
function utf8Bytes(text) {
  if (typeof TextEncoder !== "undefined") return new TextEncoder().encode(text);
  const out = [];
  for (const ch of text) {
    const cp = ch.codePointAt(0);
    if (cp < 0x80) out.push(cp);
    else if (cp < 0x800) out.push(0xc0 | (cp >> 6), 0x80 | (cp & 0x3f));
    else if (cp < 0x10000) out.push(0xe0 | (cp >> 12), 0x80 | ((cp >> 6) & 0x3f), 0x80 | (cp & 0x3f));
    else out.push(0xf0 | (cp >> 18), 0x80 | ((cp >> 12) & 0x3f), 0x80 | ((cp >> 6) & 0x3f), 0x80 | (cp & 0x3f));
  }
  return Uint8Array.from(out);
}

// Property names as searched for (`name\x01`), encoded once.
const KEYS = new Map();

/** One message of a batch: fields are found and decoded on first use. */
export class Message {
  constructor(index, buf, view, start, end, fetch) {
    this.index = index;
    this._buf = buf;
    this._view = view;
    this._start = start;
    this._end = end;
    this._fetch = fetch;
    this._spans = null;
    this._props = null;
  }

  _fixed(offset, read) {
    if (this._start + 24 > this._end) throw new MalformedBatch(`message ${this.index} is shorter than its fixed fields`);
    return read(this._start + offset);
  }
  get flags() {
    return this._fixed(0, (at) => this._view.getUint32(at, true));
  }
  get bornMs() {
    return this._fixed(4, (at) => Number(this._view.getBigInt64(at, true)));
  }
  get storeMs() {
    return this._fixed(12, (at) => Number(this._view.getBigInt64(at, true)));
  }
  /** 1 on first delivery (filters); 0 for messages not stored yet (route, tx-check). */
  get attempt() {
    return this._fixed(20, (at) => this._view.getUint32(at, true));
  }

  // [topic, tag, keys, properties, body] as [start, end) offsets into the batch.
  _layout() {
    if (this._spans === null) {
      const view = this._view;
      const end = this._end;
      let at = this._start + 24;
      const spans = [];
      for (const width of [2, 2, 2, 4, 4]) {
        if (at + width > end) throw new MalformedBatch(`message ${this.index} ends inside its fields`);
        const n = width === 2 ? view.getUint16(at, true) : view.getUint32(at, true);
        at += width;
        if (at + n > end) throw new MalformedBatch(`message ${this.index} has a field longer than the message`);
        spans.push([at, at + n]);
        at += n;
      }
      this._spans = spans;
    }
    return this._spans;
  }

  _bytes(field) {
    const [lo, hi] = this._layout()[field];
    return this._buf.subarray(lo, hi);
  }

  get topic() {
    return utf8(this._bytes(0));
  }

  /** The tag, or null when the message has none. */
  get tag() {
    const bytes = this._bytes(1);
    return bytes.length ? utf8(bytes) : null;
  }

  get keys() {
    return utf8(this._bytes(2)).split(" ").filter((k) => k);
  }

  /** User properties and the broker's own (such as UNIQ_KEY), by name. */
  get properties() {
    if (this._props === null) {
      const props = {};
      for (const item of utf8(this._bytes(3)).split("\x02")) {
        const split = item.indexOf("\x01");
        if (split >= 0) props[item.slice(0, split)] = item.slice(split + 1);
      }
      this._props = props;
    }
    return this._props;
  }

  /** A property by name, or null: found where a property starts, by its whole name, without
   * decoding the others. */
  property(name) {
    if (this._props !== null) {
      return Object.prototype.hasOwnProperty.call(this._props, name) ? this._props[name] : null;
    }
    let key = KEYS.get(name);
    if (key === undefined) {
      key = latin1(utf8Bytes(`${name}\x01`));
      KEYS.set(name, key);
    }
    // The engine's own string search over the properties read byte for byte (one character a
    // byte); only the value found is decoded as UTF-8.
    const [lo, hi] = this._layout()[3];
    const text = latin1(this._buf.subarray(lo, hi));
    let at = text.startsWith(key) ? 0 : text.indexOf(`\x02${key}`);
    if (at < 0) return null;
    if (at > 0 || !text.startsWith(key)) at += 1;
    const start = at + key.length;
    const stop = text.indexOf("\x02", start);
    return utf8(this._buf.subarray(lo + start, stop < 0 ? hi : lo + stop));
  }

  /** The body (Uint8Array); fetched from the broker on first use when the batch left it out. */
  get body() {
    if (!(this.flags & FLAG_BODY_OMITTED)) return this._bytes(4);
    return this._fetch ? (this._fetch(this.index) ?? null) : null;
  }

  /** The body as UTF-8 text, or null. */
  text() {
    const body = this.body;
    return body === null ? null : utf8(body);
  }
}

/** The messages of a batch, in order; throws MalformedBatch when the buffer does not follow the
 * encoding (a message's own fields are checked when first read). */
export function parse(buf, fetch = null) {
  if (buf.length < 4) throw new MalformedBatch("a batch starts with a 4-byte count");
  const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const count = view.getUint32(0, true);
  const messages = [];
  let at = 4;
  for (let index = 0; index < count; index++) {
    if (at + 4 > buf.length) throw new MalformedBatch(`the batch ends before message ${index} of ${count}`);
    const n = view.getUint32(at, true);
    at += 4;
    if (at + n > buf.length) throw new MalformedBatch(`message ${index} is longer than the batch`);
    messages.push(new Message(index, buf, view, at, at + n, fetch));
    at += n;
  }
  return messages;
}

/** The parameters the binding gives the plugin. */
export class Config {
  constructor(pairs = []) {
    this._params = new Map(pairs);
  }
  /** The value of parameter `name`, or null. */
  value(name) {
    return this._params.has(name) ? this._params.get(name) : null;
  }
  /** The comma-separated items of parameter `name`, trimmed; empty when absent. */
  list(name) {
    return (this.value(name) ?? "").split(",").map((s) => s.trim()).filter((s) => s);
  }
  entries() {
    return [...this._params.entries()];
  }
}

// Route decisions.
/** Store the message, changed as given ({tag, setProperties: {name: value}, removeProperties: [], body}). */
export function accept(change = {}) {
  return { kind: "accept", change };
}
/** Store the message, unchanged, in these topics instead of its own. */
export function redirect(topics) {
  return { kind: "redirect", topics };
}
/** Refuse the send; the producer gets the reason. */
export function reject(reason) {
  return { kind: "reject", reason };
}
/** Acknowledge the send but store nothing; the broker logs and counts the drop. */
export function drop(reason) {
  return { kind: "drop", reason };
}

export const Resolution = Object.freeze({ COMMIT: "commit", ROLLBACK: "rollback", UNKNOWN: "unknown" });

// Where log lines go: the broker inside a component, stderr (or a test's list) outside one.
let sink = (level, message) => console.error(`[${level}] ${message}`);
let hostConfig = null;
let brokerConfig = null;

/** Writes to the broker's log (rate-limited by the broker); level is trace|debug|info|warn|error. */
export function log(level, message) {
  if (!LEVELS.includes(level)) throw new Error(`log level ${level} is not one of ${LEVELS.join(", ")}`);
  sink(level, String(message));
}

/** Replaces where log lines go (tests); returns the previous sink. */
export function setLogSink(next) {
  const previous = sink;
  sink = next;
  return previous;
}

/** One line: what was thrown and, where the engine says, where. */
function reason(err) {
  const name = err && err.name ? err.name : "Error";
  const text = String(err && err.message !== undefined ? err.message : err).replace(/\n/g, " ");
  const stack = err && typeof err.stack === "string" ? err.stack.split("\n") : [];
  const frame = stack.map((l) => l.trim()).find((l) => l.startsWith("at "));
  const where = frame ? ` (${frame})` : "";
  return `${name}: ${text}${where}`;
}

function guarded(call) {
  try {
    return call();
  } catch (err) {
    sink("error", `the policy threw ${reason(err)}`);
    throw err;
  }
}

export function runFilter(keep, messages, config, fetch = null) {
  let batch;
  try {
    batch = parse(messages, fetch);
  } catch (err) {
    sink("error", `the broker sent a batch this SDK cannot read: ${err.message}`);
    return new Uint8Array(0);
  }
  const bits = new Uint8Array((batch.length + 7) >> 3);
  for (const message of batch) {
    if (keep(message, config)) bits[message.index >> 3] |= 1 << (message.index & 7);
  }
  return bits;
}

function one(message) {
  const batch = parse(message);
  if (batch.length !== 1) throw new MalformedBatch(`a route or tx-check call carries one message, not ${batch.length}`);
  return batch[0];
}

const KINDS = ["accept", "redirect", "reject", "drop"];

export function runRoute(decide, message, config) {
  const decision = decide(one(message), config);
  if (!decision || !KINDS.includes(decision.kind)) {
    throw new TypeError("a route returns accept(), redirect(), reject() or drop()");
  }
  return decision;
}

export function runTxCheck(check, transactionId, message, config) {
  const resolution = check(transactionId, one(message), config);
  if (!Object.values(Resolution).includes(resolution)) {
    throw new TypeError(`a tx-check returns Resolution.COMMIT, ROLLBACK or UNKNOWN, not ${resolution}`);
  }
  return resolution;
}

// Inside a component: the entry module `ferrymq plugin build` writes hands over the world's imports.
export function bindHost(imports) {
  sink = (level, message) => imports.log(level, message);
  hostConfig = imports.config;
  bindHost.body = imports.body ?? null;
}

function configFromBroker() {
  if (brokerConfig === null) brokerConfig = new Config(hostConfig ? hostConfig() : []);
  return brokerConfig;
}

function toWitDecision(decision) {
  switch (decision.kind) {
    case "accept": {
      const c = decision.change ?? {};
      return {
        tag: "accept",
        val: {
          tag: c.tag ?? undefined,
          setProperties: Object.entries(c.setProperties ?? {}).map(([k, v]) => [k, String(v)]),
          removeProperties: [...(c.removeProperties ?? [])],
          body: c.body ?? undefined,
        },
      };
    }
    case "redirect":
      return { tag: "redirect", val: [...decision.topics] };
    default:
      return { tag: decision.kind, val: String(decision.reason) };
  }
}

export function exportFilter(keep) {
  return (messages) => guarded(() => runFilter(keep, messages, configFromBroker(), bindHost.body));
}

export function exportRoute(decide) {
  return (message) => guarded(() => toWitDecision(runRoute(decide, message, configFromBroker())));
}

export function exportTxCheck(check) {
  return (transactionId, message) => guarded(() => runTxCheck(check, transactionId, message, configFromBroker()));
}
