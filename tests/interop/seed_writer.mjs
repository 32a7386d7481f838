#!/usr/bin/env node
// Writes one stream in the seed package's layout with S2's official TypeScript
// SDK (@s2-dev/streamstore 0.16), the way the seed's producer does:
//
//   seq 0   fence `session-<random>`, appended with the empty fencing token
//   seq 1.. header-less data records, one per chunk, through an append session
//           and its batcher (first batch at match_seq_num 1, session token)
//   last    fence `end-<random>` (or `error-<random>` with --fail-after)
//
// Usage: node seed_writer.mjs STREAM [CHUNKS_JSON_FILE | -] [options]
//   CHUNKS_JSON_FILE  a JSON array of strings; `-` or no file reads stdin
//   --delay-ms N      wait N ms before each chunk (lets a reader join mid-stream)
//   --batch-size N    records per batch (env S2_BATCH_SIZE, default 10 like the seed)
//   --linger-ms N     batcher linger (env S2_LINGER_DURATION, default 5000 like the seed)
//   --fail-after N    write N chunks, then end with an `error-` fence (a failed source)
//   --timeout-ms N    give up after N ms (default 60000)
//
// Environment: S2_ACCESS_TOKEN, S2_BASIN, S2_ACCOUNT_ENDPOINT, S2_BASIN_ENDPOINT.
// On success prints one JSON line: {"stream", "session", "fence", "chunks"}.
// Exit codes: 0 ok, 1 error, 2 usage, 3 timeout, 4 stream already finished,
// 5 stream already claimed by another producer.

import { randomBytes } from "node:crypto";
import { readFile } from "node:fs/promises";
import { AppendRecord, FencingTokenMismatchError, RangeNotSatisfiableError } from "@s2-dev/streamstore";
import { isFence, makeBasin } from "./s2_basin.mjs";

function usage(message) {
  process.stderr.write(`seed_writer: ${message}\n`);
  process.exit(2);
}

function parseArgs(argv) {
  const options = { positional: [] };
  for (let i = 0; i < argv.length; i += 1) {
    const arg = argv[i];
    if (arg.startsWith("--")) {
      const value = argv[i + 1];
      i += 1;
      const number = Number(value);
      if (value === undefined || !Number.isInteger(number) || number < 0) {
        usage(`${arg} needs a non-negative integer`);
      }
      const key = { "--delay-ms": "delayMs", "--batch-size": "batchSize", "--linger-ms": "lingerMs",
        "--fail-after": "failAfter", "--timeout-ms": "timeoutMs" }[arg];
      if (!key) usage(`unknown option ${arg}`);
      options[key] = number;
    } else {
      options.positional.push(arg);
    }
  }
  return options;
}

function envNumber(name, fallback) {
  const raw = process.env[name];
  return raw === undefined || raw === "" ? fallback : Number.parseInt(raw, 10);
}

function newToken(prefix) {
  return prefix + randomBytes(8).toString("hex");
}


function fenceRecord(token) {
  return AppendRecord.make(token, [["", "fence"]]);
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function readChunks(file) {
  const text = file === undefined || file === "-"
    ? await new Promise((resolve, reject) => {
        let data = "";
        process.stdin.setEncoding("utf8");
        process.stdin.on("data", (part) => { data += part; });
        process.stdin.on("end", () => resolve(data));
        process.stdin.on("error", reject);
      })
    : await readFile(file, "utf8");
  const chunks = JSON.parse(text);
  if (!Array.isArray(chunks) || !chunks.every((chunk) => typeof chunk === "string")) {
    usage("the chunks must be a JSON array of strings");
  }
  return chunks;
}

async function main() {
  const options = parseArgs(process.argv.slice(2));
  const [streamName, file] = options.positional;
  if (!streamName || options.positional.length > 2) {
    usage("usage: seed_writer.mjs STREAM [CHUNKS_JSON_FILE | -] [--delay-ms N] [--batch-size N] "
      + "[--linger-ms N] [--fail-after N] [--timeout-ms N]");
  }
  const timeoutMs = options.timeoutMs ?? 60000;
  setTimeout(() => {
    process.stderr.write(`seed_writer: timed out after ${timeoutMs} ms\n`);
    process.exit(3);
  }, timeoutMs).unref();

  const chunks = await readChunks(file);
  const batchSize = options.batchSize ?? envNumber("S2_BATCH_SIZE", 10);
  const lingerMs = options.lingerMs ?? envNumber("S2_LINGER_DURATION", 5000);
  const stream = makeBasin(usage).stream(streamName);

  // The seed's state check: is the last record an end/error fence already?
  try {
    const last = await stream.read({ tail_offset: 1, count: 1 });
    const record = last.records?.[0];
    if (record && isFence(record) && /^(end|error)-/.test(record.body ?? "")) {
      process.stderr.write(`seed_writer: stream ${streamName} has already finished\n`);
      process.exit(4);
    }
  } catch (error) {
    if (!(error instanceof RangeNotSatisfiableError)) throw error; // 416: empty stream
  }

  // Claim the stream: only one fence appended with the empty token can land.
  const session = newToken("session-");
  try {
    await stream.append(fenceRecord(session), { fencing_token: "" });
  } catch (error) {
    if (error instanceof FencingTokenMismatchError) {
      process.stderr.write(`seed_writer: stream ${streamName} already has a producer\n`);
      process.exit(5);
    }
    throw error;
  }

  const appendSession = await stream.appendSession();
  const batcher = appendSession.makeBatcher({
    lingerDuration: lingerMs,
    maxBatchSize: batchSize,
    fencing_token: session,
    match_seq_num: 1,
  });
  const acks = [];
  const toWrite = options.failAfter === undefined ? chunks : chunks.slice(0, options.failAfter);
  let closingFence = newToken(options.failAfter === undefined ? "end-" : "error-");
  try {
    for (const chunk of toWrite) {
      if (options.delayMs) await sleep(options.delayMs);
      const ack = batcher.submit(AppendRecord.make(chunk));
      ack.catch(() => {}); // awaited below; this only avoids an unhandled-rejection crash
      acks.push(ack);
    }
    batcher.flush();
    // Wait for every batch's ack before closing: SDK 0.16's AppendSession stops
    // sending queued batches once it is closed.
    await Promise.all(acks);
    await batcher[Symbol.asyncDispose]();
    await appendSession[Symbol.asyncDispose]();
  } catch (error) {
    process.stderr.write(`seed_writer: appending data failed: ${error?.stack ?? error}\n`);
    closingFence = newToken("error-");
    await stream.append(fenceRecord(closingFence), { fencing_token: session });
    process.exit(1);
  }
  await stream.append(fenceRecord(closingFence), { fencing_token: session });
  const summary = { stream: streamName, session, fence: closingFence, chunks: toWrite.length };
  await new Promise((resolve) => process.stdout.write(`${JSON.stringify(summary)}\n`, resolve));
}

main().then(
  () => process.exit(0),
  (error) => {
    process.stderr.write(`seed_writer: ${error?.stack ?? error}\n`);
    process.exit(1);
  },
);
