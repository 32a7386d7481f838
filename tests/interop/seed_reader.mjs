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

import { S2 } from "@s2-dev/streamstore";

function usage(message) {
  process.stderr.write(`seed_reader: ${message}\n`);
  process.exit(2);
}

function requireEnv(name) {
  const value = process.env[name];
  if (!value) usage(`${name} is not set`);
  return value;
}

// The SDK's base URLs include the API version; the conventional env endpoints do not.
function withApiVersion(endpoint) {
  const trimmed = endpoint.replace(/\/+$/, "");
  return trimmed.endsWith("/v1") ? trimmed : `${trimmed}/v1`;
}

// SDK 0.16 has no setting for s2-lite: it takes `baseUrl` (account calls) and
// `makeBasinBaseUrl` (basin calls), and always addresses a basin by its host name
// (`{basin}.b.aws.s2.dev`). s2-lite serves every basin on one endpoint and tells
// them apart by the `s2-basin` request header, so for a shared endpoint (one
// without a `{basin}` placeholder) every basin request carries that header.
function makeBasin() {
  const accessToken = requireEnv("S2_ACCESS_TOKEN");
  const basinName = requireEnv("S2_BASIN");
  const accountEndpoint = process.env.S2_ACCOUNT_ENDPOINT;
  const basinEndpoint = process.env.S2_BASIN_ENDPOINT;
  const s2 = new S2({
    accessToken,
    ...(accountEndpoint ? { baseUrl: withApiVersion(accountEndpoint) } : {}),
    ...(basinEndpoint
      ? { makeBasinBaseUrl: (name) => withApiVersion(basinEndpoint.replaceAll("{basin}", name)) }
      : {}),
  });
  const basin = s2.basin(basinName);
  if (basinEndpoint && !basinEndpoint.includes("{basin}")) {
    // `client` is the basin's generated HTTP client (private in the typings only);
    // its config headers are merged into every request it makes.
    if (typeof basin.client?.setConfig !== "function") {
      throw new Error("this @s2-dev/streamstore version has no basin client to add s2-basin to");
    }
    basin.client.setConfig({ headers: { "s2-basin": basinName } });
  }
  return basin;
}

function isFence(record) {
  return record.headers?.length === 1 && record.headers[0][0] === "" && record.headers[0][1] === "fence";
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

  const session = await makeBasin()
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
