#!/usr/bin/env node
// Reads one stream with S2's official TypeScript SDK (@s2-dev/streamstore 0.16)
// the way the seed package's resumeStream does: a read session from seq_num 0
// that follows the live tail, skipping fence records and collecting the data
// records' bodies, until an `end-` fence. Prints the bodies as a JSON array.
//
// Usage: node seed_reader.mjs STREAM [--timeout-ms N]
//
// Environment: S2_ACCESS_TOKEN, S2_BASIN, S2_ACCOUNT_ENDPOINT, S2_BASIN_ENDPOINT.
// Exit codes: 0 ok (JSON on stdout), 1 error, 2 usage, 3 timeout (default 30 s),
// 4 the stream ended with an `error-` fence (its producer failed), 6 the read
// session ended before any end fence.

import { isFence, makeBasin } from "./s2_basin.mjs";

function usage(message) {
  process.stderr.write(`seed_reader: ${message}\n`);
  process.exit(2);
}


function fail(code, message) {
  process.stderr.write(`seed_reader: ${message}\n`);
  process.exit(code);
}

async function main() {
  const args = process.argv.slice(2);
  let timeoutMs = 30000;
  const positional = [];
  for (let i = 0; i < args.length; i += 1) {
    if (args[i] === "--timeout-ms") {
      timeoutMs = Number(args[i + 1]);
      i += 1;
      if (!Number.isInteger(timeoutMs) || timeoutMs <= 0) usage("--timeout-ms needs a positive integer");
    } else if (args[i].startsWith("--")) {
      usage(`unknown option ${args[i]}`);
    } else {
      positional.push(args[i]);
    }
  }
  if (positional.length !== 1) usage("usage: seed_reader.mjs STREAM [--timeout-ms N]");
  const [streamName] = positional;

  const abort = new AbortController();
  setTimeout(() => {
    abort.abort();
    fail(3, `timed out after ${timeoutMs} ms waiting for the end of ${streamName}`);
  }, timeoutMs).unref();

  const session = await makeBasin(usage)
    .stream(streamName)
    .readSession({ seq_num: 0 }, { signal: abort.signal });
  const chunks = [];
  for await (const record of session) {
    if (isFence(record)) {
      const body = record.body ?? "";
      if (body.startsWith("end-")) {
        await new Promise((resolve) => process.stdout.write(`${JSON.stringify(chunks)}\n`, resolve));
        return;
      }
      if (body.startsWith("error-")) {
        fail(4, `stream ${streamName} ended with ${body} after ${chunks.length} chunk(s)`);
      }
      continue; // the session-<token> fence
    }
    // Like the seed: a record without a body carries no text.
    if (record.body) chunks.push(record.body);
  }
  fail(6, `the read session of ${streamName} ended before an end fence (${chunks.length} chunk(s))`);
}

main().then(
  () => process.exit(0),
  (error) => {
    process.stderr.write(`seed_reader: ${error?.stack ?? error}\n`);
    process.exit(1);
  },
);
