#!/usr/bin/env node
// Benchmark peer: the seed package's algorithm (s2-streamstore/resumable-stream,
// src/index.ts) on S2's official TypeScript SDK (@s2-dev/streamstore 0.16),
// re-implemented here so it can be pointed at s2-lite and measured.
//
// Per stream, as the seed's createResumableStream does:
//   1. tee() the source: one branch goes to the producer's client, one is persisted;
//   2. state check: read(tail_offset=1, count=1) (416 = new, empty stream);
//   3. claim: fence `session-<random>` appended with the empty fencing token (seq 0);
//   4. persist the other branch: appendSession() + makeBatcher({lingerDuration,
//      maxBatchSize, fencing_token: session, match_seq_num: 1}), one record per chunk;
//   5. close: flush the batcher, dispose batcher and session, then append the fence
//      `end-<random>` with the session token.
// One deviation, for SDK 0.16.11: closing an AppendSession while more than one batch
// is still queued hangs (its send loop stops once `closed` is set and waitForDrain
// then waits forever for the queue to empty). So after the flush this peer awaits
// the promise of every submitted record (each resolves with its batch's ack) before
// disposing; the records, batches and stream layout are unchanged.
//
// Measured (besides the driver protocol in common.mjs): setup_ms, the time from
// starting a producer to getting its client stream (state check + claim: two
// requests). The seed tees the source before them, so a token the source yields
// meanwhile waits in the tee, and latency_us (yield -> client) includes that wait:
// with a fast source, or when the claim is slow (many concurrent streams), the first
// token of each stream can dominate p99 when T is small.
//
// Resume (verification, and its timing with --reader): the seed's resumeStream, a
// read session from seq 0 that skips fence records and ends at the `end-` fence.
//
// --lag (issue 24, as benches/lag.py measures the Python peers): each record's ack
// promise gives its persistence lag (yield to acknowledged), and a reader with an S2
// client of its own follows every stream live from seq 0, giving each token's
// live-reader lag (yield to that reader having it); both p50/p99 in ms.
//
// Environment: S2_ACCESS_TOKEN, S2_BASIN, S2_ACCOUNT_ENDPOINT, S2_BASIN_ENDPOINT
// (for s2-lite both endpoints are http://127.0.0.1:PORT; a basin endpoint without a
// `{basin}` placeholder is shared, so basin calls carry the `s2-basin` header).
// Usage and output: see common.mjs (one JSON line on stdout, progress on stderr).

import { AppendRecord, RangeNotSatisfiableError, S2 } from "@s2-dev/streamstore";
import {
  consumeClient, log, makeSource, memoryProbe, packageVersion, percentiles, randomToken, run,
  runId, streamTokens, verifyIndices,
} from "./common.mjs";

const PEER = "s2_seed_node";

function requireEnv(name) {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
}

// The SDK's base URLs include the API version; the conventional env endpoints do not.
function withApiVersion(endpoint) {
  const trimmed = endpoint.replace(/\/+$/, "");
  return trimmed.endsWith("/v1") ? trimmed : `${trimmed}/v1`;
}

// Counts every HTTP request the SDK sends (its basin client's `fetch`) while `counting`.
const requestCounter = {
  counting: false,
  count: 0,
  fetch(request, init) {
    if (requestCounter.counting) requestCounter.count += 1;
    return globalThis.fetch(request, init);
  },
};

// A basin client, as the seed makes one per call (`new S2({accessToken}).basin(basin)`),
// pointed at S2_ACCOUNT_ENDPOINT / S2_BASIN_ENDPOINT. SDK 0.16 has no s2-lite setting:
// it takes baseUrl / makeBasinBaseUrl, and for a shared basin endpoint the basin's
// generated HTTP client gets the `s2-basin` header through setConfig (the client is
// private in the typings only).
function makeBasin(env) {
  const s2 = new S2({
    accessToken: env.accessToken,
    ...(env.accountEndpoint ? { baseUrl: withApiVersion(env.accountEndpoint) } : {}),
    ...(env.basinEndpoint
      ? { makeBasinBaseUrl: (name) => withApiVersion(env.basinEndpoint.replaceAll("{basin}", name)) }
      : {}),
  });
  const basin = s2.basin(env.basin);
  if (typeof basin.client?.setConfig !== "function") {
    throw new Error("this @s2-dev/streamstore version has no basin client to configure");
  }
  const shared = env.basinEndpoint && !env.basinEndpoint.includes("{basin}");
  basin.client.setConfig({
    fetch: requestCounter.fetch,
    ...(shared ? { headers: { "s2-basin": env.basin } } : {}),
  });
  return basin;
}

function isFence(record) {
  return record.headers?.length === 1 && record.headers[0][0] === "" && record.headers[0][1] === "fence";
}

const fenceRecord = (token) => AppendRecord.make(token, [["", "fence"]]);

// The seed's producer for one stream. Returns the client branch and the promise of
// the persistence task (the seed hands that to waitUntil); the promise resolves to
// the number of data records the stream holds (from the end fence's ack).
const elapsedSinceMs = (yieldTime) => Number(process.hrtime.bigint() - yieldTime) / 1e6;

async function produce(env, options, streamName, makeStream, lag) {
  const basin = makeBasin(env);
  const stream = basin.stream(streamName);
  // As in the seed, the source is made and teed before the state check and the claim,
  // so its first token can be waiting while they run (see setup_ms).
  const [persistentStream, clientStream] = makeStream().tee();
  const session = randomToken("session-");

  try {
    const last = await stream.read({ tail_offset: 1, count: 1 });
    const record = last.records?.[0];
    if (record && isFence(record) && /^(end|error)-/.test(record.body ?? "")) {
      throw new Error(`stream ${streamName} has already finished`);
    }
  } catch (error) {
    if (!(error instanceof RangeNotSatisfiableError)) throw error; // 416: new, empty stream
  }
  await stream.append(fenceRecord(session), { fencing_token: "" });

  const persist = async () => {
    const reader = persistentStream.getReader();
    const appendSession = await stream.appendSession();
    const batcher = appendSession.makeBatcher({
      lingerDuration: options.lingerMs,
      maxBatchSize: options.batchSize,
      fencing_token: session,
      match_seq_num: 1, // the first data record follows the fence at seq 0
    });
    const acks = [];
    try {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        const ack = batcher.submit(AppendRecord.make(value));
        ack.catch(() => {}); // awaited below; this only avoids an unhandled rejection
        if (lag) {
          const index = acks.length;
          ack.then(() => lag.persistence.push(elapsedSinceMs(lag.yieldTimes[index])), () => {});
        }
        acks.push(ack);
      }
      batcher.flush();
      await Promise.all(acks); // the SDK 0.16.11 close-hang workaround (see the header)
      await batcher[Symbol.asyncDispose]();
      await appendSession[Symbol.asyncDispose]();
      const endAck = await stream.append(fenceRecord(randomToken("end-")), { fencing_token: session });
      return endAck.start.seq_num - 1; // data records at seq 1 .. end fence - 1
    } catch (error) {
      try {
        await stream.append(fenceRecord(randomToken("error-")), { fencing_token: session });
      } catch (fenceError) {
        log(`${PEER}: ${streamName}: appending the error fence failed: ${fenceError}`);
      }
      throw error;
    } finally {
      reader.releaseLock();
    }
  };
  return { clientStream, persisted: persist() };
}

// The seed's resume: a read session from seq 0; skips fences, ends at the end fence.
// Returns the text and the times (ms, from the call) to the first data chunk and to the end.
async function resume(env, streamName) {
  const started = process.hrtime.bigint();
  const elapsedMs = () => Number(process.hrtime.bigint() - started) / 1e6;
  const session = await makeBasin(env).stream(streamName).readSession({ seq_num: 0 });
  const parts = [];
  let firstMs = null;
  let ended = false;
  for await (const record of session) {
    if (isFence(record)) {
      if (record.body?.startsWith("end-")) {
        ended = true;
        break;
      }
      if (record.body?.startsWith("error-")) throw new Error(`stream ${streamName} ended with an error fence`);
      continue;
    }
    if (record.body) {
      if (firstMs === null) firstMs = elapsedMs();
      parts.push(record.body);
    }
  }
  const fullMs = elapsedMs();
  if (!ended) throw new Error(`the read session of ${streamName} ended before its end fence`);
  return { text: parts.join(""), firstMs, fullMs };
}

// --lag: a reader in another context (an S2 client of its own) following the
// stream live; each data record's live-reader lag, in the order they were yielded.
async function followElsewhere(env, streamName, lag) {
  const session = await makeBasin(env).stream(streamName).readSession({ seq_num: 0 });
  let index = 0;
  const parts = [];
  for await (const record of session) {
    if (isFence(record)) {
      if (/^(end|error)-/.test(record.body ?? "")) break;
      continue;
    }
    if (record.body) {
      lag.reader.push(elapsedSinceMs(lag.yieldTimes[index]));
      index += 1;
      parts.push(record.body);
    }
  }
  return parts.join("");
}

async function main(options) {
  const env = {
    accessToken: requireEnv("S2_ACCESS_TOKEN"),
    basin: requireEnv("S2_BASIN"),
    accountEndpoint: process.env.S2_ACCOUNT_ENDPOINT,
    basinEndpoint: process.env.S2_BASIN_ENDPOINT,
  };
  const { streams: n, tokens: t, rate } = options;
  const run_ = runId();
  const names = Array.from({ length: n }, (_, i) => `bench-node-s2-${run_}-${i}`);
  const tokens = names.map((_, i) => streamTokens(options.seed, i, t));
  const expected = tokens.map((list) => list.join(""));
  const latencies = new Float64Array(n * t);
  const setupMs = new Float64Array(n);
  log(`${PEER}: run ${run_}: ${n} streams x ${t} tokens at ${rate || "unpaced"} tok/s, `
    + `batch ${options.batchSize}, linger ${options.lingerMs} ms${options.hold ? ", holding mid-reply" : ""}`);

  // Warm-up, outside the measurements (the Redis peer connects before it starts too):
  // Node loads its fetch implementation on first use, which took ~100 ms here.
  await makeBasin(env).streams.list({ limit: 1 });

  // Produce phase: every stream concurrently, its client reading the tee branch.
  // --hold: the sources stop halfway until the in-flight RSS is sampled (see common.mjs).
  const { hold, result: probe } = memoryProbe(PEER, options);
  requestCounter.counting = true;
  const cpu0 = process.cpuUsage();
  const wall0 = process.hrtime.bigint();
  const persistenceLags = [];
  const readerLags = [];
  const results = await Promise.all(names.map(async (name, i) => {
    const yieldTimes = new BigInt64Array(t);
    const lag = options.lag ? { yieldTimes, persistence: persistenceLags, reader: readerLags } : null;
    const called = process.hrtime.bigint();
    const { clientStream, persisted } = await produce(env, options, name, () => makeSource(tokens[i], rate, yieldTimes, { hold }), lag);
    setupMs[i] = Number(process.hrtime.bigint() - called) / 1e6;
    const [client, stored, followed] = await Promise.all([
      consumeClient(clientStream, yieldTimes, latencies, i * t),
      persisted,
      lag ? followElsewhere(env, name, lag) : null,
    ]);
    const followedOk = followed === null || followed === expected[i];
    return { clientOk: client.count === t && client.text === expected[i] && followedOk, stored };
  }));
  let wallS = Number(process.hrtime.bigint() - wall0) / 1e9;
  const cpu = process.cpuUsage(cpu0);
  requestCounter.counting = false;
  const requests = requestCounter.count;
  const { rssInFlightKib, settleS } = await probe; // resolved: every source was released
  if (options.hold) wallS -= settleS; // the settle wait is not produce work

  let verified = true;
  const clientFailures = results.filter((r) => !r.clientOk).length;
  const storeFailures = results.filter((r) => r.stored !== t).length;
  if (clientFailures) log(`${PEER}: ${clientFailures} producer clients got the wrong text`);
  if (storeFailures) log(`${PEER}: ${storeFailures} streams do not hold ${t} data records`);
  verified = clientFailures === 0 && storeFailures === 0;
  log(`${PEER}: produced in ${wallS.toFixed(3)} s, ${requests} requests; resuming to verify`);

  // Verification: resume each (or 20 sampled) finished stream, one at a time.
  const picks = verifyIndices(n);
  const firstMs = [];
  const fullMs = [];
  for (const i of picks) {
    const resumed = await resume(env, names[i]);
    if (resumed.text !== expected[i]) {
      log(`${PEER}: ${names[i]}: the resumed text differs from what was produced`);
      verified = false;
    }
    firstMs.push(resumed.firstMs);
    fullMs.push(resumed.fullMs);
  }
  log(`${PEER}: verified ${picks.length} streams: ${verified}`);

  return {
    peer: PEER,
    versions: { "@s2-dev/streamstore": packageVersion("@s2-dev/streamstore"), node: process.version },
    config: { streams: n, tokens: t, rate, batch_size: options.batchSize, linger_ms: options.lingerMs, hold: options.hold },
    tokens: results.reduce((sum, r) => sum + r.stored, 0),
    wall_s: Number(wallS.toFixed(6)),
    cpu_s: Number(((cpu.user + cpu.system) / 1e6).toFixed(6)),
    latency_us: percentiles(latencies, 1),
    setup_ms: percentiles(setupMs),
    resume_first_chunk_ms: options.reader ? percentiles(firstMs) : null,
    resume_full_ms: options.reader ? percentiles(fullMs) : null,
    requests,
    rss_in_flight_kib: rssInFlightKib,
    persistence_lag_ms: options.lag ? percentiles(persistenceLags) : null,
    reader_lag_ms: options.lag ? percentiles(readerLags) : null,
    verified_streams: picks.length,
    verified,
  };
}

run(PEER, main);
