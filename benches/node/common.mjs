// Shared by the Node benchmark peers (s2_peer.mjs, redis_peer.mjs): the driver
// protocol (arguments, the single JSON result line), the deterministic synthetic
// token workload, the paced source and the statistics. Keeping it in one place
// makes both peers run exactly the same workload.
//
// Driver protocol: node <peer>.mjs --streams N --tokens T --rate R [--batch-size B]
// [--linger-ms L] [--reader] [--hold] [--lag] [--seed S] [--timeout-s S]. N streams run concurrently
// in one process, each producing T tokens, paced at R tokens/s per stream (0 =
// unpaced); the producer's client reads each stream to its end. Then every stream
// (or 20 spread evenly when N > 100) is resumed and its text compared.
// --hold measures the memory of N replies in flight at once: every source yields
// its first floor(T/2) tokens, then waits until all N have got there; after a settle
// time of L + 2000 ms (pending batches flushed) the RSS is sampled, and the sources
// go on to finish (and are verified) as without --hold. Stdout gets exactly one JSON line:
//   peer, versions, config {streams, tokens, rate, batch_size, linger_ms, hold},
//   tokens        tokens persisted (S2: data records per the end fence's ack) and verified,
//   wall_s, cpu_s produce phase only (cpu_s: process.cpuUsage user + system); with
//                 --hold, wall_s leaves out the settle time (cpu_s does not),
//   latency_us    {p50, p99} over all tokens: source yields it -> producer's client gets it,
//   setup_ms      {p50, p99} over streams: producer call -> client stream returned,
//   resume_first_chunk_ms, resume_full_ms  {p50, p99} over the resumed streams (--reader), else null,
//   requests      HTTP requests (S2) / producer-path commands (Redis) of the produce phase,
//   rss_in_flight_kib  --hold: process RSS with all N streams held mid-reply minus the RSS
//                 before the produce phase (after global.gc() if exposed), KiB; else null,
//   persistence_lag_ms, reader_lag_ms  {p50, p99} over all tokens with --lag (the S2 peer:
//                 yield -> acknowledged, and yield -> a reader with a client of its own has it),
//                 else null (the Redis peer ignores --lag),
//   verified_streams, verified (and resume_note for Redis).
// Exit status: 0 verified, 1 error or failed verification, 2 bad arguments, 3 timeout.

import { readFileSync } from "node:fs";
import { randomBytes } from "node:crypto";

export const USAGE =
  "usage: node <peer>.mjs --streams N --tokens T --rate R [--batch-size B] [--linger-ms L] "
  + "[--reader] [--hold] [--seed S] [--timeout-s S]";

export class UsageError extends Error {}

// `--rate` is tokens per second per stream (0 = unpaced). `--seed` changes the
// workload (default fixed, so every run and every peer writes the same text).
// `--timeout-s` bounds the whole run (the peer exits 3 when it fires). `--hold`:
// the in-flight memory measurement (see the top of this file and memoryProbe).
export function parseArgs(argv) {
  const options = {
    streams: undefined, tokens: undefined, rate: undefined, batchSize: 100, lingerMs: 200,
    reader: false, hold: false, lag: false, seed: 20240611, timeoutS: 900,
  };
  const numeric = {
    "--streams": ["streams", true, 1], "--tokens": ["tokens", true, 1], "--rate": ["rate", false, 0],
    "--batch-size": ["batchSize", true, 1], "--linger-ms": ["lingerMs", false, 0],
    "--seed": ["seed", true, 0], "--timeout-s": ["timeoutS", false, 0],
  };
  for (let i = 0; i < argv.length; i += 1) {
    const arg = argv[i];
    if (arg === "--reader" || arg === "--hold" || arg === "--lag") {
      options[arg.slice(2)] = true;
      continue;
    }
    const spec = numeric[arg];
    if (!spec) throw new UsageError(`unknown argument ${arg}`);
    const [key, integer, min] = spec;
    const raw = argv[i + 1];
    i += 1;
    const value = Number(raw);
    if (raw === undefined || raw === "" || !Number.isFinite(value) || value < min
        || (integer && !Number.isInteger(value))) {
      throw new UsageError(`${arg} needs a${integer ? "n integer" : " number"} >= ${min}`);
    }
    options[key] = value;
  }
  for (const key of ["streams", "tokens", "rate"]) {
    if (options[key] === undefined) throw new UsageError(`--${key} is required`);
  }
  if (options.batchSize > 1000) throw new UsageError("--batch-size is at most 1000 (S2's batch limit)");
  return options;
}

// ---------------------------------------------------------------- workload

// mulberry32: a tiny deterministic 32-bit PRNG.
export function prng(seed) {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const ASCII_WORDS = (
  "the of and to in is that for it as was with be by on not he this are or his from at "
  + "which but have an they you were her she there been one all we their has would when if so "
  + "no will can more out up into do any your what some them other than then now only its "
  + "time like model token stream batch data python rust value return async await import "
  + "class def self print list dict string number error result function request response "
  + "server client"
).split(" ");
const NON_ASCII = "é|ü|ñ|ç|ß|ø|å|日本|語|中文|한국|Привет|мир|Ω|π|—|…|€|«|»|😀|🚀|👍|🎉|✨|🔥|💡".split("|");
const PUNCTUATION = [",", ".", ":", ";", "!", "?", "(", ")", "-", "'s", "\n", "\"", "\\"];

// One LLM-like token of 3-6 characters (code points, so no emoji is split):
// ~10% contain non-ASCII text (accents, CJK, Cyrillic, emoji), ~8% punctuation
// (including newlines, quotes and backslashes), the rest words, 60% with a leading space.
function makeToken(random) {
  const pick = (list) => list[Math.floor(random() * list.length)];
  const roll = random();
  const lead = random() < 0.6 ? " " : "";
  let text;
  if (roll < 0.10) text = lead + pick(NON_ASCII) + pick(NON_ASCII);
  else if (roll < 0.18) text = pick(ASCII_WORDS) + pick(PUNCTUATION);
  else text = lead + pick(ASCII_WORDS);
  let chars = Array.from(text);
  while (chars.length < 3) chars.push("aeiourstln"[Math.floor(random() * 10)]);
  if (chars.length > 6) chars = chars.slice(0, 3 + Math.floor(random() * 4));
  return chars.join("");
}

// The tokens of stream `index`: deterministic in (seed, index, count). Generated
// before the produce phase, so generating them is not measured.
export function streamTokens(seed, index, count) {
  const random = prng((Math.imul(seed >>> 0, 0x9e3779b1) ^ (index + 1)) >>> 0);
  const tokens = new Array(count);
  for (let i = 0; i < count; i += 1) tokens[i] = makeToken(random);
  return tokens;
}

// With --hold: how long after every stream is held (beyond the linger) before
// RSS is sampled, so batches flushed by the linger have landed. Same in peers.py.
const SETTLE_MS = 2000;

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// A synthetic LLM reply as a ReadableStream<string>, one chunk per token.
//
// - `rate` > 0: token i (0-based) is due at start + (i + 1) / rate seconds, on an
//   absolute schedule (no drift); start is when the source is created, so the
//   first token comes one interval later, like a model's time to first token.
//   `rate` = 0: every token is available at once (as fast as the consumer pulls).
// - highWaterMark 0: a token is produced only when its consumer asks for one, so
//   the yield -> receive latency is the library's pipeline, not a pre-filled buffer.
// - `yieldTimes[i]` gets process.hrtime.bigint() at the moment token i is enqueued.
// - `gate` (optional promise): after the last token the source waits for it before
//   closing (redis_peer keeps verified streams live this way).
// - `hold` (optional Hold, --hold): after its first `hold.at` tokens the source calls
//   hold.arrive() and waits for hold.release before the rest. The schedule then
//   restarts from the release: token `hold.at` is due at once, the next one interval
//   later, and so on (as benches/peers.py's paced_source does).
export function makeSource(tokens, rate, yieldTimes, { gate, hold } = {}) {
  let startedAt = performance.now();
  const interval = rate > 0 ? 1000 / rate : 0;
  let next = 0;
  let holding = hold !== undefined;
  return new ReadableStream(
    {
      async pull(controller) {
        if (holding && next >= hold.at) {
          holding = false;
          hold.arrive();
          await hold.release;
          if (interval > 0) startedAt = performance.now() - (next + 1) * interval;
        }
        if (next >= tokens.length) {
          if (gate) await gate;
          controller.close();
          return;
        }
        if (interval > 0) {
          const wait = startedAt + (next + 1) * interval - performance.now();
          if (wait > 0) await sleep(wait);
        }
        yieldTimes[next] = process.hrtime.bigint();
        controller.enqueue(tokens[next]);
        next += 1;
      },
    },
    { highWaterMark: 0 },
  );
}

// --hold: the shared hold point of the sources. `at` = floor(T/2) tokens; arrive()
// counts a source that got there; `allHeld` resolves when all N have; `release`
// resolves when open() is called.
export class Hold {
  #open;
  #allHeld;

  constructor(streams, tokens) {
    this.at = Math.floor(tokens / 2);
    this.streams = streams;
    this.held = 0;
    this.release = new Promise((resolve) => { this.#open = resolve; });
    this.allHeld = new Promise((resolve) => { this.#allHeld = resolve; });
  }

  arrive() {
    this.held += 1;
    if (this.held === this.streams) this.#allHeld();
  }

  open() {
    this.#open();
  }
}

// The --hold memory measurement (`name`: the peer, for the log); call it right
// before the produce phase starts. Without --hold: {hold: undefined, result} with result resolving to
// {rssInFlightKib: null, settleS: 0}. With --hold: records the baseline RSS now
// (after global.gc() when node runs with --expose-gc), and once every source holds,
// waits the settle time (linger_ms + 2000 ms, so pending batches are flushed), samples
// the RSS and opens the hold; `result` then resolves to {rssInFlightKib (rounded KiB
// over the baseline), settleS (the settle's duration, to leave out of wall_s)}.
export function memoryProbe(name, options) {
  if (!options.hold) return { hold: undefined, result: Promise.resolve({ rssInFlightKib: null, settleS: 0 }) };
  if (typeof globalThis.gc === "function") globalThis.gc();
  const baseline = process.memoryUsage().rss;
  const hold = new Hold(options.streams, options.tokens);
  const result = hold.allHeld.then(async () => {
    const settled0 = process.hrtime.bigint();
    await sleep(options.lingerMs + SETTLE_MS);
    const rss = process.memoryUsage().rss;
    const settleS = Number(process.hrtime.bigint() - settled0) / 1e9;
    log(`${name}: all ${options.streams} streams held after ${hold.at} tokens: rss ${(rss / 1048576).toFixed(1)} MiB, `
      + `baseline ${(baseline / 1048576).toFixed(1)} MiB`);
    hold.open();
    return { rssInFlightKib: Math.round((rss - baseline) / 1024), settleS };
  });
  return { hold, result };
}

// Reads the producer's client stream to its end (or, with `untilCount`, until that
// many chunks arrived), recording for each token the microseconds between its
// yield and its arrival into `latencies` from `offset` on. Returns {text, count}.
export async function consumeClient(stream, yieldTimes, latencies, offset, untilCount) {
  const reader = stream.getReader();
  let count = 0;
  const parts = [];
  try {
    for (;;) {
      if (untilCount !== undefined && count >= untilCount) break;
      const { done, value } = await reader.read();
      if (done) break;
      const now = process.hrtime.bigint();
      if (count < yieldTimes.length) latencies[offset + count] = Number(now - yieldTimes[count]) / 1000;
      parts.push(value);
      count += 1;
    }
  } finally {
    if (untilCount === undefined) reader.releaseLock();
  }
  return { text: parts.join(""), count, reader };
}

// ---------------------------------------------------------------- results

// Nearest-rank percentiles of a numeric array (rounded to 3 decimals).
export function percentiles(values, digits = 3) {
  if (!values || values.length === 0) return null;
  const sorted = Float64Array.from(values).sort();
  const at = (p) => sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))];
  const round = (x) => Number(x.toFixed(digits));
  return { p50: round(at(50)), p99: round(at(99)) };
}

// Which streams are resumed to verify: all of them, or 20 spread evenly when N > 100.
export function verifyIndices(streams) {
  if (streams <= 100) return Array.from({ length: streams }, (_, i) => i);
  const picks = new Set();
  for (let k = 0; k < 20; k += 1) picks.add(Math.floor((k * streams) / 20 + streams / 40));
  return [...picks].sort((a, b) => a - b);
}

export function packageVersion(name) {
  const url = new URL(`./node_modules/${name}/package.json`, import.meta.url);
  return JSON.parse(readFileSync(url, "utf8")).version;
}

export function runId() {
  return randomBytes(6).toString("hex");
}

export function randomToken(prefix) {
  // 8 random hex digits: well under S2's 36-byte fencing-token limit.
  return prefix + randomBytes(4).toString("hex");
}

export function log(message) {
  process.stderr.write(`${message}\n`);
}

// Runs `main`, prints its result as ONE JSON line on stdout and exits 0 when it
// verified, 1 on any error or failed verification, 2 on bad arguments, 3 on timeout.
export function run(name, main) {
  let options;
  try {
    options = parseArgs(process.argv.slice(2));
  } catch (error) {
    log(`${name}: ${error.message}\n${USAGE}`);
    process.exit(2);
  }
  if (options.timeoutS > 0) {
    setTimeout(() => {
      log(`${name}: timed out after ${options.timeoutS} s`);
      process.exit(3);
    }, options.timeoutS * 1000).unref();
  }
  process.on("unhandledRejection", (error) => {
    log(`${name}: unhandled rejection: ${error?.stack ?? error}`);
    process.exit(1);
  });
  main(options).then(
    (result) => {
      process.stdout.write(`${JSON.stringify(result)}\n`, () => process.exit(result.verified ? 0 : 1));
    },
    (error) => {
      log(`${name}: ${error?.stack ?? error}`);
      process.exit(1);
    },
  );
}
