#!/usr/bin/env node
'use strict';
/**
 * Drives the official RocketMQ Node.js client (npm rocketmq-client-nodejs 1.0.8) for ferrymq's tests.
 *
 * See ../README.md for the command line and the JSON events printed on stdout; ../python/driver.py is
 * the reference implementation of the same contract.
 *
 * Client log lines never reach stdout: the client's own logger (egg-logger) writes to
 * ~/logs/rocketmq/, its console transport is forced off, and the logger handed to every client writes
 * warnings and errors to stderr (everything with DRIVER_VERBOSE=1).
 */

// egg-logger's console transport honours EGG_LOG and writes below-ERROR levels to *stdout*; the
// StandardConsumeService always uses that default logger, so keep it off stdout.
process.env.EGG_LOG = 'NONE';

const util = require('node:util');
const {
  BaseClient, ConsumeResult, FilterExpression, Producer, PushConsumer, SimpleConsumer,
} = require('rocketmq-client-nodejs');
const {
  FilterType, TransactionResolution,
} = require('rocketmq-client-nodejs/proto/apache/rocketmq/v2/definition_pb');

// The client waits for the server's Settings reply (telemetry) at startup with no limit of its own.
const STARTUP_TIMEOUT_MS = 30000;
// shutdown() may wait for in-flight long polls (push: request timeout + long-polling timeout);
// the run is over by then, so bound it.
const SHUTDOWN_TIMEOUT_MS = 3000;
// Push: how long PushConsumer.shutdown() may take before the driver skips its wait for in-flight
// long polls (it always sleeps 1s itself).
const PUSH_SHUTDOWN_GRACE_MS = 1500;
// Push: how long to wait for the acks/nacks of handled messages before shutting down.
const SETTLE_TIMEOUT_MS = 5000;

const verbose = process.env.DRIVER_VERBOSE === '1';
// Errors are logged as one line ("Name: message") unless verbose, which keeps their stacks.
const line = (level, args) => {
  const text = util.format(...args.map(a => (a instanceof Error && !verbose ? errorText(a) : a)));
  process.stderr.write(`[client ${level}] ${text}\n`);
};
const logger = {
  info: (...args) => { if (verbose) line('INFO', args); },
  debug: (...args) => { if (verbose) line('DEBUG', args); },
  warn: (...args) => line('WARN', args),
  error: (...args) => line('ERROR', args),
};

function emit(event, fields) {
  process.stdout.write(`${JSON.stringify({ event, ...fields })}\n`);
}

// "<Name>: <message>", followed by the causes the client wraps errors in (startup hides the
// broker's status behind "Failed to fetch topic routes after 3 attempts").
function errorText(e) {
  const parts = [];
  for (let cur = e, depth = 0; cur !== undefined && cur !== null && depth < 5; cur = cur.cause, depth++) {
    const text = cur instanceof Error ? `${cur.name}: ${cur.message}` : `Error: ${String(cur)}`;
    if (!parts.some(p => p.includes(text))) parts.push(text);
    if (!(cur instanceof Error)) break;
  }
  return parts.join(' <- caused by: ');
}

const sleep = ms => new Promise(resolve => setTimeout(resolve, ms));

// Resolves to true when `promise` settles within `ms`, false otherwise; rejections propagate.
function within(promise, ms) {
  let timer;
  const limit = new Promise(resolve => { timer = setTimeout(() => resolve(false), ms); });
  return Promise.race([ promise.then(() => true), limit ]).finally(() => clearTimeout(timer));
}

async function startup(client, what) {
  const started = await within(client.startup(), STARTUP_TIMEOUT_MS);
  if (!started) {
    throw new Error(`${what} startup did not complete within ${STARTUP_TIMEOUT_MS}ms ` +
      '(the client waits for the Settings reply on the Telemetry stream)');
  }
}

async function shutdown(client, graceMs = SHUTDOWN_TIMEOUT_MS) {
  try {
    if (await within(client.shutdown(), graceMs)) return;
    if (!(client instanceof PushConsumer)) {
      logger.warn('shutdown did not complete within %dms, exiting anyway', graceMs);
      return;
    }
    // PushConsumer.shutdown() first waits for its in-flight long polls (up to request timeout +
    // long-polling timeout, ~33s). Skip that wait: run the base client's shutdown (timers,
    // NotifyClientTermination, telemetry streams, channels) directly.
    logger.info('push consumer shutdown still waiting after %dms, running the base shutdown', graceMs);
    if (!await within(BaseClient.prototype.shutdown.call(client), SHUTDOWN_TIMEOUT_MS)) {
      logger.warn('shutdown did not complete within %dms, exiting anyway', SHUTDOWN_TIMEOUT_MS);
    }
  } catch (e) {
    logger.warn('shutdown failed: %s', errorText(e));
  }
}

// ---------------------------------------------------------------------------------------------
// Command line (mirrors the argparse definition in ../python/driver.py)

const USAGE = `usage: driver.js <endpoint> produce --topic T --count N [--prefix P] [--tag T] [--keys K1,K2]
       [--message-group G] [--delay-ms D] [--property k=v]... [--body-bytes N]
usage: driver.js <endpoint> simple --group G --topic T [--filter-type tag|sql] [--expr E] [--expect N]
       [--timeout-s S] [--invisible-s I] [--batch B] [--await-s A] [--no-ack]
usage: driver.js <endpoint> push --group G --topic T [--filter-type tag|sql] [--expr E] [--expect N]
       [--timeout-s S] [--fail-times K]
usage: driver.js <endpoint> tx --topic T --count N [--prefix P] [--decide commit|rollback|even|none]
       [--checker commit|rollback|even|unknown] [--stay-s S] [--tag T] [--keys K1,K2]
       [--property k=v]... [--body-bytes N]`;

class UsageError extends Error {}

const int = name => v => {
  if (!/^[-+]?\d+$/.test(v.trim())) throw new UsageError(`argument ${name}: invalid int value: '${v}'`);
  return Number.parseInt(v, 10);
};
const float = name => v => {
  const n = Number(v);
  if (v.trim() === '' || Number.isNaN(n)) throw new UsageError(`argument ${name}: invalid float value: '${v}'`);
  return n;
};
const str = () => v => v;
const choice = (name, values) => v => {
  if (!values.includes(v)) {
    throw new UsageError(`argument ${name}: invalid choice: '${v}' (choose from ${values.map(x => `'${x}'`).join(', ')})`);
  }
  return v;
};

const CONSUMER_OPTIONS = {
  '--group': { parse: str, required: true },
  '--topic': { parse: str, required: true },
  '--filter-type': { parse: n => choice(n, [ 'tag', 'sql' ]), default: 'tag' },
  '--expr': { parse: str, default: '*' },
  '--expect': { parse: int, default: 1 },
  '--timeout-s': { parse: float, default: 30 },
  '--invisible-s': { parse: int, default: 15 },
  '--batch': { parse: int, default: 16 },
  '--await-s': { parse: int, default: 5 },
  '--no-ack': { flag: true },
  '--fail-times': { parse: int, default: 0 },
};

// The message options of `produce` and `tx` (see build()).
const MESSAGE_OPTIONS = {
  '--topic': { parse: str, required: true },
  '--count': { parse: int, default: 1 },
  '--prefix': { parse: str, default: 'm' },
  '--tag': { parse: str, default: null },
  '--keys': { parse: str, default: null },
  '--message-group': { parse: str, default: null },
  '--delay-ms': { parse: int, default: null },
  '--property': { parse: str, append: true },
  '--body-bytes': { parse: int, default: null },
};

const COMMANDS = {
  produce: MESSAGE_OPTIONS,
  simple: CONSUMER_OPTIONS,
  push: CONSUMER_OPTIONS,
  tx: {
    ...MESSAGE_OPTIONS,
    '--decide': { parse: n => choice(n, [ 'commit', 'rollback', 'even', 'none' ]), default: 'commit' },
    '--checker': { parse: n => choice(n, [ 'commit', 'rollback', 'even', 'unknown' ]), default: 'even' },
    '--stay-s': { parse: float, default: 0 },
  },
};

function parseArgs(argv) {
  const positional = [];
  const options = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === '-h' || arg === '--help') {
      process.stdout.write(`${USAGE}\n`);
      process.exit(0);
    }
    if (!arg.startsWith('--') || arg === '--') {
      positional.push(arg);
      continue;
    }
    // Options belong to the command, which comes after the endpoint.
    const specs = COMMANDS[positional[1]];
    if (!specs) throw new UsageError(`unrecognized arguments: ${arg}`);
    const eq = arg.indexOf('=');
    const name = eq < 0 ? arg : arg.slice(0, eq);
    const spec = specs[name];
    if (!spec) throw new UsageError(`unrecognized arguments: ${arg}`);
    let value;
    if (eq >= 0) {
      value = arg.slice(eq + 1);
    } else if (!spec.flag) {
      if (i + 1 >= argv.length) throw new UsageError(`argument ${name}: expected one argument`);
      value = argv[++i];
    }
    options.push([ name, value ]);
  }
  if (positional.length < 2) throw new UsageError('the following arguments are required: endpoint, command');
  if (positional.length > 2) throw new UsageError(`unrecognized arguments: ${positional.slice(2).join(' ')}`);
  const [ endpoint, command ] = positional;
  const specs = COMMANDS[command];
  if (!specs) {
    throw new UsageError(`argument command: invalid choice: '${command}' (choose from 'produce', 'tx', 'simple', 'push')`);
  }
  const args = { endpoint, command };
  const key = name => name.slice(2).replace(/-/g, '_');
  for (const [ name, spec ] of Object.entries(specs)) {
    args[key(name)] = spec.flag ? false : spec.append ? [] : spec.default;
  }
  for (const [ name, value ] of options) {
    const spec = specs[name];
    if (spec.flag) {
      if (value !== undefined) throw new UsageError(`argument ${name}: ignored explicit argument '${value}'`);
      args[key(name)] = true;
    } else if (spec.append) {
      args[key(name)].push(spec.parse(name)(value));
    } else {
      args[key(name)] = spec.parse(name)(value);
    }
  }
  const missing = Object.entries(specs).filter(([ name, spec ]) => spec.required && args[key(name)] == null);
  if (missing.length) {
    throw new UsageError(`the following arguments are required: ${missing.map(([ n ]) => n).join(', ')}`);
  }
  return args;
}

// ---------------------------------------------------------------------------------------------

function filterOf(args) {
  return new FilterExpression(args.expr, args.filter_type === 'sql' ? FilterType.SQL : FilterType.TAG);
}

// The client maps absent proto3 fields to '' / 0 (tag, message group, delivery attempt); report them
// as null like the Python client does.
function describe(msg) {
  return {
    id: msg.messageId,
    topic: msg.topic,
    body: msg.body.toString('utf8'),
    tag: msg.tag || null,
    keys: [ ...(msg.keys || []) ].sort(),
    properties: Object.fromEntries(msg.properties || []),
    attempt: msg.deliveryAttempt || null,
    message_group: msg.messageGroup || null,
    delivery_ms: msg.deliveryTimestamp ? msg.deliveryTimestamp.getTime() : null,
    received_ms: Date.now(),
  };
}

// The options of message `i` for Producer.send(): body `<prefix><i>` (padded with `x` to
// --body-bytes), and the tag, keys, message group, delivery time and properties given.
function build(args, i) {
  let body = `${args.prefix}${i}`;
  if (args.body_bytes) body = body.padEnd(args.body_bytes, 'x');
  const options = { topic: args.topic, body: Buffer.from(body) };
  if (args.tag) options.tag = args.tag;
  if (args.keys) options.keys = args.keys.split(',');
  if (args.message_group) options.messageGroup = args.message_group;
  if (args.delay_ms !== null) options.deliveryTimestamp = new Date(Date.now() + args.delay_ms);
  if (args.property.length) {
    options.properties = new Map();
    for (const prop of args.property) {
      const eq = prop.indexOf('=');
      options.properties.set(eq < 0 ? prop : prop.slice(0, eq), eq < 0 ? '' : prop.slice(eq + 1));
    }
  }
  return options;
}

async function produce(args) {
  const producer = new Producer({ endpoints: args.endpoint, topics: [ args.topic ], logger });
  await startup(producer, 'producer');
  let sent = 0;
  try {
    for (let i = 0; i < args.count; i++) {
      try {
        const receipt = await producer.send(build(args, i));
        emit('sent', { index: i, id: receipt.messageId });
        sent += 1;
      } catch (e) { // the client reports broker and client-side refusals alike
        emit('error', { index: i, error: errorText(e) });
      }
    }
  } finally {
    await shutdown(producer);
  }
  return sent;
}

async function simple(args) {
  const consumer = new SimpleConsumer({
    endpoints: args.endpoint,
    consumerGroup: args.group,
    subscriptions: new Map([[ args.topic, filterOf(args) ]]),
    awaitDuration: args.await_s * 1000,
    logger,
  });
  await startup(consumer, 'simple consumer');
  let count = 0;
  const deadline = Date.now() + args.timeout_s * 1000;
  try {
    while (count < args.expect && Date.now() < deadline) {
      for (const msg of await consumer.receive(args.batch, args.invisible_s * 1000)) {
        emit('received', describe(msg));
        count += 1;
        if (!args.no_ack) {
          await consumer.ack(msg);
          emit('acked', { id: msg.messageId });
        }
      }
    }
  } finally {
    await shutdown(consumer);
  }
  return count;
}

async function push(args) {
  const failures = new Map();
  let consumed = 0;
  let closed = false;
  const listener = {
    consume(message) {
      if (closed) return ConsumeResult.FAILURE; // after `done`: leave it to the next consumer
      emit('received', describe(message));
      const failed = failures.get(message.messageId) || 0;
      if (failed < args.fail_times) {
        failures.set(message.messageId, failed + 1);
        return ConsumeResult.FAILURE;
      }
      consumed += 1;
      emit('consumed', { id: message.messageId });
      return ConsumeResult.SUCCESS;
    },
  };
  const consumer = new PushConsumer({
    endpoints: args.endpoint,
    consumerGroup: args.group,
    subscriptions: new Map([[ args.topic, filterOf(args) ]]),
    messageListener: listener,
    logger,
  });
  // The client acks (or nacks) a message asynchronously after the listener returns; count those
  // calls so that the run does not end with an ack still on the wire.
  let settling = 0;
  for (const method of [ 'ackMessageViaRpc', 'changeInvisibleDurationViaRpc' ]) {
    const original = consumer[method].bind(consumer);
    consumer[method] = async (...params) => {
      settling += 1;
      try {
        return await original(...params);
      } finally {
        settling -= 1;
      }
    };
  }
  await startup(consumer, 'push consumer');
  const deadline = Date.now() + args.timeout_s * 1000;
  try {
    while (consumed < args.expect && Date.now() < deadline) {
      await sleep(50);
    }
    const settleDeadline = Date.now() + SETTLE_TIMEOUT_MS;
    await sleep(20); // let the client start the ack of the last message
    while (settling > 0 && Date.now() < settleDeadline) {
      await sleep(20);
    }
  } finally {
    await shutdown(consumer, PUSH_SHUTDOWN_GRACE_MS);
    closed = true;
  }
  return consumed;
}

// The message index at the end of a body `<prefix><i>` (padding aside), -1 without one.
function indexOf(body) {
  const match = /(\d*)x*$/.exec(body);
  return match[1] ? Number.parseInt(match[1], 10) : -1;
}

// commit | rollback | even (an even index commits, an odd one rolls back) | unknown | none.
function decision(rule, index) {
  if (rule === 'even') return index % 2 === 0 ? 'commit' : 'rollback';
  return rule;
}

async function tx(args) {
  // The client calls check() when the broker sends a RecoverOrphanedTransactionCommand and ends the
  // transaction with the resolution returned (source SOURCE_SERVER_CHECK); on null or
  // TRANSACTION_RESOLUTION_UNSPECIFIED it sends no EndTransaction at all, leaving it to a later check.
  const checker = {
    async check(message) {
      const body = message.body.toString('utf8');
      const answer = decision(args.checker, indexOf(body));
      emit('checked', { id: message.messageId, body, resolution: answer });
      if (answer === 'commit') return TransactionResolution.COMMIT;
      if (answer === 'rollback') return TransactionResolution.ROLLBACK;
      return TransactionResolution.TRANSACTION_RESOLUTION_UNSPECIFIED;
    },
  };
  const producer = new Producer({ endpoints: args.endpoint, topics: [ args.topic ], checker, logger });
  await startup(producer, 'transactional producer');
  let sent = 0;
  try {
    for (let i = 0; i < args.count; i++) {
      let transaction;
      let receipt;
      try {
        transaction = producer.beginTransaction();
        receipt = await producer.send(build(args, i), transaction);
        emit('sent', { index: i, id: receipt.messageId, transaction_id: receipt.transactionId });
        sent += 1;
      } catch (e) {
        emit('error', { index: i, error: errorText(e) });
        continue;
      }
      const what = decision(args.decide, i);
      try {
        if (what === 'commit') {
          await transaction.commit();
          emit('committed', { index: i, id: receipt.messageId });
        } else if (what === 'rollback') {
          await transaction.rollback();
          emit('rolled_back', { index: i, id: receipt.messageId });
        } else {
          emit('left', { index: i, id: receipt.messageId });
        }
      } catch (e) {
        emit('error', { index: i, error: errorText(e) });
      }
    }
    await sleep(args.stay_s * 1000);
  } finally {
    await shutdown(producer);
  }
  return sent;
}

// ---------------------------------------------------------------------------------------------

function finish(code) {
  // Flush stdout before exiting: the client keeps timers and gRPC channels alive.
  process.stdout.write('', () => process.exit(code));
}

process.on('unhandledRejection', reason => {
  // Background tasks of the client (heartbeats, route refreshes, ...) must not kill the run.
  logger.error('unhandled rejection in the client: %s', reason instanceof Error ? reason.stack : String(reason));
});
process.on('uncaughtException', e => {
  emit('fatal', { error: errorText(e) });
  finish(1);
});

async function main() {
  let args;
  try {
    args = parseArgs(process.argv.slice(2));
  } catch (e) {
    if (!(e instanceof UsageError)) throw e;
    process.stderr.write(`${USAGE}\ndriver.js: error: ${e.message}\n`);
    process.exit(2);
  }
  let count;
  try {
    count = await { produce, simple, push, tx }[args.command](args);
  } catch (e) {
    emit('fatal', { error: errorText(e) });
    finish(1);
    return;
  }
  emit('done', { count });
  finish(0);
}

main();
