// Drives a resumable_fast AI SDK backend with the real `ai` package (pinned
// in package-lock.json): its DefaultChatTransport, and its AbstractChat (the
// state machine behind useChat) with an in-memory state as @ai-sdk/react has.
//
// Usage: node ai_sdk_client.mjs MODE '<json options>'
//
// It prints one JSON object per line: {"waiting": NAME} when the test should
// let the reply go on (the backend's source waits for that), and last
// {"result": ...}. Exit 0 unless the script itself broke.
//
// Modes:
//   transport  sendMessages on opts.post, abort after opts.abortAfter text
//              deltas, reconnectToStream({chatId}) on opts.reconnect, read it
//              to the end, then reconnect once more (after the finish) and
//              for a chat id that was never used.
//   chat       a Chat sends a message and stop()s after opts.abortAfterChars
//              characters; then the same Chat (tab back) and a new Chat with
//              the stored messages (a reload, on opts.reconnect) resumeStream().
//   errors     what the transport makes of error answers: a malformed body
//              (sendMessages throws the server's text) and an unknown chat.

import { AbstractChat, DefaultChatTransport } from 'ai';

const [mode, rawOptions] = process.argv.slice(2);
const opts = JSON.parse(rawOptions ?? '{}');

function emit(object) {
  process.stdout.write(JSON.stringify(object) + '\n');
}

class MemoryChatState {
  constructor(messages = []) {
    this.messages = messages;
    this.status = 'ready';
    this.error = undefined;
  }
  pushMessage = message => {
    this.messages = this.messages.concat(message);
  };
  popMessage = () => {
    this.messages = this.messages.slice(0, -1);
  };
  replaceMessage = (index, message) => {
    this.messages = [
      ...this.messages.slice(0, index),
      this.snapshot(message),
      ...this.messages.slice(index + 1),
    ];
  };
  snapshot = thing => structuredClone(thing);
}

class MemoryChat extends AbstractChat {
  constructor({ messages, ...init }) {
    super({ ...init, state: new MemoryChatState(messages) });
  }
}

function textOf(message) {
  return message.parts
    .filter(part => part.type === 'text')
    .map(part => part.text)
    .join('');
}

function summary(chat) {
  return {
    status: chat.status,
    error: chat.error ? String(chat.error.message ?? chat.error) : null,
    messages: chat.messages.map(message => ({
      id: message.id,
      role: message.role,
      text: textOf(message),
      textParts: message.parts.filter(part => part.type === 'text').length,
    })),
  };
}

function userMessage(text) {
  return { id: 'user-1', role: 'user', parts: [{ type: 'text', text }] };
}

// Reads a stream of UI message chunks to its end; `onChunk` may return true
// to stop reading (the caller aborts then).
async function readChunks(stream, onChunk = () => false) {
  const chunks = [];
  const reader = stream.getReader();
  try {
    while (true) {
      const { done, value } = await reader.read();
      if (done) return { chunks, ended: true };
      chunks.push(value);
      if (onChunk(chunks)) return { chunks, ended: false };
    }
  } finally {
    reader.releaseLock();
  }
}

const sleep = ms => new Promise(resolve => setTimeout(resolve, ms));

async function until(condition, what, timeoutMs = 30_000) {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(5);
  }
}

async function transportMode() {
  const sender = new DefaultChatTransport({ api: opts.post });
  const reconnector = new DefaultChatTransport({ api: opts.reconnect ?? opts.post });
  const abort = new AbortController();
  const sent = await sender.sendMessages({
    trigger: 'submit-message',
    chatId: opts.chat,
    messageId: undefined,
    messages: [userMessage(opts.prompt)],
    abortSignal: abort.signal,
  });
  const first = await readChunks(
    sent,
    chunks => chunks.filter(c => c.type === 'text-delta').length >= opts.abortAfter,
  );
  abort.abort();

  const resumedStream = await reconnector.reconnectToStream({ chatId: opts.chat });
  let resumed = null;
  if (resumedStream !== null) {
    const reading = readChunks(resumedStream);
    emit({ waiting: 'reconnected' });
    resumed = await reading;
  }
  const afterFinish = await reconnector.reconnectToStream({ chatId: opts.chat });
  const unknown = await reconnector.reconnectToStream({ chatId: `${opts.chat}-never-used` });
  emit({
    result: {
      first: first.chunks,
      firstEnded: first.ended,
      resumed: resumed?.chunks ?? null,
      resumedEnded: resumed?.ended ?? null,
      afterFinish: afterFinish === null ? null : 'a stream',
      unknown: unknown === null ? null : 'a stream',
    },
  });
}

// A transport whose GET answers (the reconnects) are counted as they arrive.
function countingTransport(api, answers) {
  return new DefaultChatTransport({
    api,
    fetch: async (url, init) => {
      const response = await fetch(url, init);
      if ((init?.method ?? 'GET') === 'GET') answers.push(response.status);
      return response;
    },
  });
}

async function chatMode() {
  const answers = [];
  const tabA = new MemoryChat({ id: opts.chat, transport: countingTransport(opts.post, answers) });
  const sending = tabA.sendMessage({ text: opts.prompt });
  await until(() => {
    const last = tabA.lastMessage;
    return last?.role === 'assistant' && textOf(last).length >= opts.abortAfterChars;
  }, 'the first characters of the reply');
  await tabA.stop();
  await sending;
  const stopped = summary(tabA);

  // A reload: a new Chat with the messages the server kept (the user's).
  const reloaded = new MemoryChat({
    id: opts.chat,
    messages: [structuredClone(tabA.messages[0])],
    transport: countingTransport(opts.reconnect ?? opts.post, answers),
  });
  const resuming = Promise.all([tabA.resumeStream(), reloaded.resumeStream()]);
  // Both reconnects answered before the reply may go on.
  await until(() => answers.length >= 2, 'both reconnects to be answered');
  emit({ waiting: 'reconnected', answers });
  await resuming;

  // After the reply finished there is nothing to resume.
  const later = new MemoryChat({
    id: opts.chat,
    messages: structuredClone(reloaded.messages),
    transport: new DefaultChatTransport({ api: opts.reconnect ?? opts.post }),
  });
  await later.resumeStream();
  emit({
    result: {
      stopped,
      tabBack: summary(tabA),
      reloaded: summary(reloaded),
      later: summary(later),
    },
  });
}

async function errorsMode() {
  const transport = new DefaultChatTransport({
    api: opts.post,
    prepareSendMessagesRequest: ({ id }) => ({ body: { id, messages: 'not a list' } }),
  });
  let malformed = null;
  try {
    const stream = await transport.sendMessages({
      trigger: 'submit-message',
      chatId: opts.chat,
      messageId: undefined,
      messages: [userMessage('hi')],
      abortSignal: undefined,
    });
    malformed = { stream: (await readChunks(stream)).chunks };
  } catch (error) {
    malformed = { error: String(error.message ?? error) };
  }
  const unknown = await new DefaultChatTransport({ api: opts.post }).reconnectToStream({
    chatId: opts.chat,
  });
  emit({ result: { malformed, unknown: unknown === null ? null : 'a stream' } });
}

const modes = { transport: transportMode, chat: chatMode, errors: errorsMode };
if (!(mode in modes)) {
  console.error(`unknown mode ${mode}; one of ${Object.keys(modes).join(', ')}`);
  process.exit(2);
}
await modes[mode]();
