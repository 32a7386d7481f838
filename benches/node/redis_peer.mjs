#!/usr/bin/env node
// Benchmark peer: Vercel's `resumable-stream` package (Redis pub/sub) with the
// node-redis client, against a real redis-server at REDIS_URL.
//
// One context per process, as the package is meant to be used:
// createResumableStreamContext({ waitUntil, publisher, subscriber }) with one
// node-redis publisher and one subscriber connection shared by all streams. Each
// producer calls resumableStream(id, () => source) and its client reads the
// returned stream (the producer tees internally: it buffers every chunk in memory
// and publishes it to listeners that attached with resumeExistingStream).
//
// What is measured, and how it differs from the S2 peer (also in "resume_note"):
// - The package keeps a stream's text only in the producer's memory; Redis holds a
//   sentinel key and carries pub/sub messages. Once a stream is done,
//   resumeExistingStream returns null: a finished stream cannot be resumed. So the
//   verified streams (all of them, or 20 spread evenly when N > 100) are kept live
//   after their last token: their source waits on a gate before closing. Once every
//   client has received all its tokens, each verified stream is resumed, one at a
//   time, and its text compared; with --reader, resume_first_chunk_ms is the time
//   from calling resumeExistingStream to the first chunk (the producer publishes
//   its whole buffer as one message) and resume_full_ms the time to the whole
//   text (all T tokens). Then the gate opens and the held streams close.
// - wall_s / cpu_s: the produce phase (until every client has every token, and the
//   un-held streams are done), plus the closing of the held streams after the gate
//   opens (SET DONE, UNSUBSCRIBE); the resumes in between are not counted.
// - setup_ms: time from calling resumableStream to getting the client stream
//   (INCR, SUBSCRIBE, SET); the package calls makeStream only after them.
// - requests: Redis commands on the producer path, counted by wrappers around the
//   publisher and subscriber: INCR, SUBSCRIBE, SET "1", SET "DONE", UNSUBSCRIBE per
//   stream. Commands caused by the verification resumes (GET, PUBLISH on request
//   and chunk channels, SUBSCRIBE/UNSUBSCRIBE of chunk channels) are left out.
// - --batch-size / --linger-ms do not apply (no batching: one PUBLISH per chunk per
//   listener); config reports them as null. --linger-ms only sets the --hold settle
//   time (linger + 500 ms, default 700 ms), as for the other peers.
// - --hold: every source (held for verification or not) stops after floor(T/2)
//   tokens until the in-flight RSS is sampled; the verified streams' gate is a
//   second, separate wait after their last token. The settle time is left out of wall_s.
//
// Environment: REDIS_URL (e.g. redis://127.0.0.1:6379).
// Usage and output: see common.mjs (one JSON line on stdout, progress on stderr).

import { AsyncLocalStorage } from "node:async_hooks";
import { createClient } from "redis";
import { createResumableStreamContext } from "resumable-stream";
import {
  consumeClient, log, makeSource, memoryProbe, packageVersion, percentiles, run, runId,
  streamTokens, verifyIndices,
} from "./common.mjs";

const PEER = "vercel_resumable_stream_redis";
const READ_TIMEOUT_MS = 10000;

const RESUME_NOTE =
  "Vercel's resumable-stream keeps a stream's text only in the producer's memory and "
  + "resumeExistingStream returns null once a stream is done, so finished streams cannot be "
  + "resumed. Verified streams (all, or 20 sampled when N > 100) were held open after their last "
  + "token (the source waits before closing) and resumed one at a time while live: first_chunk = "
  + "resumeExistingStream call to the first chunk (the whole buffered text arrives as one pub/sub "
  + "message), full = to the complete text of all T tokens. The held streams' close (SET DONE, "
  + "UNSUBSCRIBE) is added to wall_s/cpu_s; requests counts producer-path commands only (INCR, "
  + "SUBSCRIBE, SET, SET, UNSUBSCRIBE per stream), not the resumes' commands.";

// Counts commands by name and by whether they are on the producer path.
const counter = { producer: 0, byCommand: {} };
function count(command, producerPath) {
  counter.byCommand[command] = (counter.byCommand[command] ?? 0) + 1;
  if (producerPath) counter.producer += 1;
}

// The package's Publisher / Subscriber interfaces over node-redis clients, counting
// each call (each is exactly one Redis command). Passing our own objects means the
// package does not create or connect clients itself, so we connect them first.
function countingPublisher(client) {
  return {
    connect: async () => {},
    publish: (channel, message) => {
      count("PUBLISH", false); // only to listeners (resumes) or to ask a producer (a resume)
      return client.publish(channel, message);
    },
    set: (key, value, options) => {
      count("SET", true);
      return client.set(key, value, options);
    },
    get: (key) => {
      count("GET", false); // resumeExistingStream / hasExistingStream / resume watchdog
      return client.get(key);
    },
    incr: (key) => {
      count("INCR", true);
      return client.incr(key);
    },
  };
}

function countingSubscriber(client) {
  const producerPath = (channel) => channel.includes(":request:");
  return {
    connect: async () => {},
    subscribe: (channel, callback) => {
      count("SUBSCRIBE", producerPath(channel));
      return client.subscribe(channel, callback);
    },
    unsubscribe: (channel) => {
      count("UNSUBSCRIBE", producerPath(channel));
      return client.unsubscribe(channel);
    },
  };
}

function withTimeout(promise, ms, what) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

const elapsedMs = (since) => Number(process.hrtime.bigint() - since) / 1e6;

// Resumes a live stream and reads until it holds `expected.length` characters.
async function resumeLive(ctx, streamId, expected) {
  const started = process.hrtime.bigint();
  const stream = await withTimeout(ctx.resumeExistingStream(streamId), READ_TIMEOUT_MS, `resume ${streamId}`);
  if (!stream) throw new Error(`resumeExistingStream(${streamId}) returned ${stream}`);
  const reader = stream.getReader();
  let text = "";
  let firstMs = null;
  while (text.length < expected.length) {
    const { done, value } = await withTimeout(reader.read(), READ_TIMEOUT_MS, `read resumed ${streamId}`);
    if (done) break;
    if (firstMs === null && value.length > 0) firstMs = elapsedMs(started);
    text += value;
  }
  const fullMs = elapsedMs(started);
  await reader.cancel(); // unsubscribes its chunk channel
  return { text, firstMs, fullMs };
}

async function main(options) {
  const url = process.env.REDIS_URL;
  if (!url) throw new Error("REDIS_URL is not set");
  const { streams: n, tokens: t, rate } = options;

  // No reconnects: a dropped connection fails the run instead of stalling it.
  const publisher = createClient({ url, socket: { reconnectStrategy: false } });
  const subscriber = createClient({ url, socket: { reconnectStrategy: false } });
  for (const client of [publisher, subscriber]) {
    client.on("error", (error) => log(`${PEER}: redis client error: ${error}`));
    await client.connect();
  }
  const serverVersion = /redis_version:([^\r\n]+)/.exec(await publisher.info("server"))?.[1] ?? null;

  // waitUntil gets each producer's "done" promise; AsyncLocalStorage tells which stream's.
  const streamOf = new AsyncLocalStorage();
  const donePromises = new Array(n);
  const ctx = createResumableStreamContext({
    waitUntil: (promise) => {
      const index = streamOf.getStore();
      if (index === undefined) throw new Error("waitUntil outside a producer");
      donePromises[index] = promise;
    },
    publisher: countingPublisher(publisher),
    subscriber: countingSubscriber(subscriber),
  });

  const run_ = runId();
  const ids = Array.from({ length: n }, (_, i) => `bench-node-redis-${run_}-${i}`);
  const tokens = ids.map((_, i) => streamTokens(options.seed, i, t));
  const expected = tokens.map((list) => list.join(""));
  const picks = verifyIndices(n);
  const held = new Set(picks);
  let openGate;
  const gate = new Promise((resolve) => { openGate = resolve; });
  const latencies = new Float64Array(n * t);
  const setupMs = new Float64Array(n);
  log(`${PEER}: run ${run_}: ${n} streams x ${t} tokens at ${rate || "unpaced"} tok/s; `
    + `${picks.length} held open for verification${options.hold ? "; all holding mid-reply" : ""}`);

  // Produce phase. --hold: the sources stop halfway until the in-flight RSS is
  // sampled (see common.mjs); independent of the gate, which the verified streams
  // wait on after their last token.
  const { hold, result: probe } = memoryProbe(PEER, options);
  const cpu0 = process.cpuUsage();
  const wall0 = process.hrtime.bigint();
  const producers = await Promise.all(ids.map((id, i) => streamOf.run(i, async () => {
    const yieldTimes = new BigInt64Array(t);
    const isHeld = held.has(i);
    const called = process.hrtime.bigint();
    const stream = await ctx.resumableStream(id, () => makeSource(tokens[i], rate, yieldTimes, { gate: isHeld ? gate : undefined, hold }));
    setupMs[i] = elapsedMs(called);
    if (!stream) throw new Error(`resumableStream(${id}) returned null: the stream was already done`);
    const client = await consumeClient(stream, yieldTimes, latencies, i * t, isHeld ? t : undefined);
    if (!isHeld) await donePromises[i];
    return { ...client, clientOk: client.count === t && client.text === expected[i] };
  })));
  let wallS = Number(process.hrtime.bigint() - wall0) / 1e9;
  let cpu = process.cpuUsage(cpu0);
  const { rssInFlightKib, settleS } = await probe; // resolved: every source was released
  if (options.hold) wallS -= settleS; // the settle wait is not produce work
  log(`${PEER}: produced in ${wallS.toFixed(3)} s; resuming ${picks.length} live streams to verify`);

  let verified = true;
  const clientFailures = producers.filter((p) => !p.clientOk).length;
  if (clientFailures) {
    log(`${PEER}: ${clientFailures} producer clients got the wrong text`);
    verified = false;
  }

  // Verification (not measured as produce): resume each held stream while it is live.
  const firstMs = [];
  const fullMs = [];
  for (const i of picks) {
    const resumed = await resumeLive(ctx, ids[i], expected[i]);
    if (resumed.text !== expected[i]) {
      log(`${PEER}: ${ids[i]}: the resumed text differs from what was produced`);
      verified = false;
    }
    firstMs.push(resumed.firstMs);
    fullMs.push(resumed.fullMs);
  }

  // Close the held streams; this is producer work, added to the produce phase.
  const cpu2 = process.cpuUsage();
  const wall2 = process.hrtime.bigint();
  openGate();
  await withTimeout(Promise.all(picks.map(async (i) => {
    const { done } = await producers[i].reader.read();
    if (!done) {
      log(`${PEER}: ${ids[i]}: the producer's client got more than ${t} chunks`);
      verified = false;
    }
    producers[i].reader.releaseLock();
    await donePromises[i];
  })), READ_TIMEOUT_MS, "closing the held streams");
  wallS += Number(process.hrtime.bigint() - wall2) / 1e9;
  const cpuClose = process.cpuUsage(cpu2);
  cpu = { user: cpu.user + cpuClose.user, system: cpu.system + cpuClose.system };

  // Every stream must now be marked done in Redis.
  const states = await Promise.all(ids.map((id) => ctx.hasExistingStream(id)));
  const notDone = states.filter((state) => state !== "DONE").length;
  if (notDone) {
    log(`${PEER}: ${notDone} streams are not marked DONE in Redis`);
    verified = false;
  }
  log(`${PEER}: verified ${picks.length} streams: ${verified}; commands ${JSON.stringify(counter.byCommand)}`);
  await Promise.allSettled([publisher.quit(), subscriber.quit()]);

  return {
    peer: PEER,
    versions: {
      "resumable-stream": packageVersion("resumable-stream"),
      redis: packageVersion("redis"),
      "@redis/client": packageVersion("@redis/client"),
      "redis-server": serverVersion,
      node: process.version,
    },
    config: { streams: n, tokens: t, rate, batch_size: null, linger_ms: null, hold: options.hold },
    tokens: verified ? n * t : producers.filter((p) => p.clientOk).length * t,
    wall_s: Number(wallS.toFixed(6)),
    cpu_s: Number(((cpu.user + cpu.system) / 1e6).toFixed(6)),
    latency_us: percentiles(latencies, 1),
    setup_ms: percentiles(setupMs),
    resume_first_chunk_ms: options.reader ? percentiles(firstMs) : null,
    resume_full_ms: options.reader ? percentiles(fullMs) : null,
    requests: counter.producer,
    rss_in_flight_kib: rssInFlightKib,
    verified_streams: picks.length,
    resume_note: RESUME_NOTE,
    verified,
  };
}

run(PEER, main);
