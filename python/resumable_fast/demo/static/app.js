// resumable_fast chat demo: each reply is a resumable stream read over
// Server-Sent Events. The current stream id lives in the URL (#<id>) and, with
// the prompt, in localStorage, so a reload or a second tab reopens the reply's
// event stream from its start: the server replays what was written, then
// follows the live tail. The page starts from an empty reply each time, so the
// text it shows is exactly the reply, never a repeat.
"use strict";

(() => {
  const TURNS_KEY = "resumable_fast.demo.turns";
  const CHAT_KEY = "resumable_fast.demo.chat_id";
  const MAX_TURNS = 30;
  const STREAM_ID = /^demo-[A-Za-z0-9_-]{22}$/;
  const ACTIVE = new Set(["connecting", "streaming", "reconnecting", "stopping"]);

  const $ = (id) => document.getElementById(id);
  const ui = {
    backend: $("backend"),
    model: $("model"),
    transcript: $("transcript"),
    empty: $("empty"),
    status: $("status"),
    streamInfo: $("stream-info"),
    error: $("error"),
    form: $("composer"),
    prompt: $("prompt"),
    send: $("send"),
    stop: $("stop"),
    newChat: $("new-chat"),
    metricsPanel: $("metrics-panel"),
  };

  /** Views of the turns on the page, by stream id. */
  const views = new Map();
  let currentId = null;
  let sending = false;

  // -- storage ----------------------------------------------------------------

  function loadTurns() {
    try {
      const turns = JSON.parse(localStorage.getItem(TURNS_KEY) || "[]");
      if (!Array.isArray(turns)) return [];
      return turns.filter((t) => t && typeof t.id === "string" && STREAM_ID.test(t.id));
    } catch {
      return [];
    }
  }

  function saveTurns(turns) {
    try {
      localStorage.setItem(TURNS_KEY, JSON.stringify(turns.slice(-MAX_TURNS)));
    } catch {
      // Storage full or disabled: the page still works, it just forgets.
    }
  }

  function storedTurn(id) {
    return loadTurns().find((t) => t.id === id);
  }

  /** Update one turn in place: other tabs may have added turns meanwhile. */
  function updateTurn(id, patch) {
    const turns = loadTurns();
    const turn = turns.find((t) => t.id === id);
    if (turn) {
      Object.assign(turn, patch);
      saveTurns(turns);
    }
  }

  function addTurn(turn) {
    const turns = loadTurns();
    if (!turns.some((t) => t.id === turn.id)) {
      turns.push(turn);
      saveTurns(turns);
    }
  }

  function randomId() {
    const bytes = crypto.getRandomValues(new Uint8Array(12));
    return btoa(String.fromCharCode(...bytes)).replace(/\+/g, "-").replace(/\//g, "_");
  }

  function chatId() {
    try {
      let id = localStorage.getItem(CHAT_KEY);
      if (!id || !/^[A-Za-z0-9_-]{1,64}$/.test(id)) {
        id = randomId();
        localStorage.setItem(CHAT_KEY, id);
      }
      return id;
    } catch {
      return randomId();
    }
  }

  function idFromUrl() {
    let id = "";
    try {
      id = decodeURIComponent(location.hash.slice(1));
    } catch {
      return null;
    }
    return STREAM_ID.test(id) ? id : null;
  }

  // -- rendering --------------------------------------------------------------

  function showError(message) {
    ui.error.textContent = message;
    ui.error.hidden = false;
  }

  function hideError() {
    ui.error.hidden = true;
    ui.error.textContent = "";
  }

  function message(role, label) {
    const box = document.createElement("div");
    box.className = `message ${role}`;
    const who = document.createElement("div");
    who.className = "who";
    who.textContent = label;
    box.append(who);
    return box;
  }

  function renderTurn(turn) {
    const item = document.createElement("li");
    item.className = "turn";

    const user = message("user", "You");
    const prompt = document.createElement("p");
    prompt.className = "prompt-text";
    if (typeof turn.prompt === "string") {
      prompt.textContent = turn.prompt;
    } else {
      prompt.classList.add("muted");
      prompt.textContent = "(this message was sent from another browser)";
    }
    user.append(prompt);

    const assistant = message("assistant", "Model");
    const reply = document.createElement("div");
    reply.className = "reply";
    const text = document.createTextNode("");
    reply.append(text);
    assistant.append(reply);

    item.append(user, assistant);
    ui.transcript.append(item);
    ui.empty.hidden = true;

    const view = { turn, item, reply, text, source: null, state: "idle", position: 0 };
    view.stopRequested = turn.state === "stopping";
    views.set(turn.id, view);
    return view;
  }

  function updateControls() {
    const view = views.get(currentId);
    const active = Boolean(view && ACTIVE.has(view.state));
    ui.send.disabled = sending || active;
    ui.stop.disabled = !active || view.state === "stopping";
  }

  function updateStreamInfo() {
    const view = views.get(currentId);
    if (!view) {
      ui.streamInfo.textContent = "";
      return;
    }
    const count = view.position === 1 ? "1 character" : `${view.position} characters`;
    ui.streamInfo.textContent = `stream ${view.turn.id} · ${count}`;
  }

  function setState(view, state) {
    view.state = state;
    view.reply.dataset.state = state;
    view.item.dataset.state = state;
    if (view.turn.id === currentId) {
      ui.status.textContent = state;
      ui.status.dataset.state = state;
      updateControls();
    }
  }

  function setCurrent(id) {
    const previous = document.getElementById("reply");
    if (previous) previous.removeAttribute("id");
    currentId = id;
    const view = views.get(id);
    if (view) {
      view.reply.id = "reply";
      ui.status.textContent = view.state;
      ui.status.dataset.state = view.state;
    } else {
      ui.status.textContent = "idle";
      ui.status.dataset.state = "idle";
    }
    updateStreamInfo();
    updateControls();
  }

  function nearBottom() {
    return window.innerHeight + window.scrollY >= document.body.scrollHeight - 80;
  }

  // -- streaming --------------------------------------------------------------

  function closeSource(view) {
    if (view.source) {
      view.source.close();
      view.source = null;
    }
  }

  function finish(view, state) {
    closeSource(view);
    const stored = storedTurn(view.turn.id);
    if (state === "done" && (view.stopRequested || (stored && stored.state === "stopping"))) {
      state = "stopped";
    }
    if (state === "done" && stored && stored.state === "stopped") state = "stopped";
    setState(view, state);
    if (state === "done" || state === "stopped" || state === "failed") {
      updateTurn(view.turn.id, { state, final: true, text: view.text.data });
    }
  }

  /** Read the reply from its first character: replay, then the live tail. */
  function follow(view) {
    closeSource(view);
    view.text.data = "";
    view.position = 0;
    setState(view, "connecting");
    const source = new EventSource(`/api/chat/${encodeURIComponent(view.turn.id)}/events`);
    view.source = source;

    source.onopen = () => {
      if (view.state === "reconnecting") setState(view, "streaming");
    };
    source.onmessage = (event) => {
      // Each id is the reply's length up to and including this chunk. On a
      // reconnect the browser sends the last one back (Last-Event-ID) and the
      // server goes on after it; the check below only guards against repeats.
      const position = Number(event.lastEventId);
      if (Number.isSafeInteger(position) && position <= view.position) return;
      let chunk;
      try {
        chunk = JSON.parse(event.data);
      } catch {
        return;
      }
      if (typeof chunk !== "string") return;
      const stick = nearBottom();
      view.text.appendData(chunk);
      if (Number.isSafeInteger(position)) view.position = position;
      if (view.state === "connecting" || view.state === "reconnecting") {
        setState(view, "streaming");
      }
      if (view.turn.id === currentId) updateStreamInfo();
      if (stick) window.scrollTo(0, document.body.scrollHeight);
    };
    source.addEventListener("end", () => finish(view, "done"));
    source.addEventListener("failed", (event) => {
      let text = "the stream failed";
      try {
        text = JSON.parse(event.data).message || text;
      } catch {
        // keep the generic text
      }
      finish(view, "failed");
      if (view.turn.id === currentId) showError(`The reply failed: ${text}`);
    });
    source.onerror = () => {
      if (view.source !== source) return;
      if (source.readyState === EventSource.CLOSED) {
        // The server refused the stream (unknown or expired): no retry.
        closeSource(view);
        setState(view, "unavailable");
        if (view.turn.id === currentId) {
          showError("This reply could not be loaded: the stream is unknown or expired, or the store is down.");
        }
      } else {
        setState(view, "reconnecting");
      }
    };
  }

  function renderAll() {
    for (const view of views.values()) closeSource(view);
    views.clear();
    ui.transcript.replaceChildren();
    hideError();

    let id = idFromUrl();
    const turns = loadTurns();
    if (id && !turns.some((t) => t.id === id)) {
      const turn = { id, prompt: null };
      addTurn(turn);
      turns.push(turn);
    }
    if (!id && turns.length) {
      id = turns[turns.length - 1].id;
      history.replaceState(null, "", `#${id}`);
    }
    ui.empty.hidden = turns.length > 0;
    for (const turn of turns) {
      const view = renderTurn(turn);
      if (turn.final && typeof turn.text === "string") {
        view.text.data = turn.text;
        view.position = [...turn.text].length;
        setState(view, turn.state || "done");
      } else {
        follow(view);
      }
    }
    setCurrent(id);
  }

  // -- actions ----------------------------------------------------------------

  async function errorMessage(response) {
    try {
      const body = await response.json();
      if (body && typeof body.error === "string") return body.error;
    } catch {
      // not JSON
    }
    return `the server answered ${response.status}`;
  }

  async function send(event) {
    event.preventDefault();
    const prompt = ui.prompt.value;
    if (!prompt.trim()) {
      showError("Type a message first.");
      ui.prompt.focus();
      return;
    }
    hideError();
    sending = true;
    updateControls();
    let streamId;
    try {
      const response = await fetch("/api/chat", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ prompt, chat_id: chatId() }),
      });
      if (!response.ok) throw new Error(await errorMessage(response));
      streamId = (await response.json()).stream_id;
      if (typeof streamId !== "string" || !STREAM_ID.test(streamId)) {
        throw new Error("the server sent no stream id");
      }
    } catch (error) {
      showError(`Could not send: ${error.message}`);
      return;
    } finally {
      sending = false;
      updateControls();
    }
    const turn = { id: streamId, prompt };
    addTurn(turn);
    history.pushState(null, "", `#${streamId}`);
    ui.prompt.value = "";
    const view = renderTurn(turn);
    setCurrent(streamId);
    follow(view);
    window.scrollTo(0, document.body.scrollHeight);
  }

  async function stop() {
    const view = views.get(currentId);
    if (!view || !ACTIVE.has(view.state)) return;
    const id = view.turn.id;
    view.stopRequested = true;
    updateTurn(id, { state: "stopping" }); // other tabs end as "stopped" too
    setState(view, "stopping");
    try {
      const response = await fetch(`/api/chat/${encodeURIComponent(id)}/stop`, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: "{}",
      });
      if (!response.ok) throw new Error(await errorMessage(response));
    } catch (error) {
      view.stopRequested = false;
      updateTurn(id, { state: null });
      if (view.state === "stopping") setState(view, "streaming");
      showError(`Could not stop: ${error.message}`);
    }
  }

  function newChat() {
    for (const view of views.values()) closeSource(view);
    views.clear();
    saveTurns([]);
    try {
      localStorage.removeItem(CHAT_KEY);
    } catch {
      // ignore
    }
    history.pushState(null, "", location.pathname);
    renderAll();
    ui.prompt.focus();
  }

  /** Another tab stopped a reply shown here: show it as stopped too. */
  function onStorage(event) {
    if (event.key !== TURNS_KEY) return;
    for (const turn of loadTurns()) {
      const view = views.get(turn.id);
      if (!view) continue;
      if (turn.state === "stopping" || turn.state === "stopped") {
        view.stopRequested = true;
        if (view.state === "done") setState(view, "stopped");
      }
    }
  }

  async function loadInfo() {
    try {
      const response = await fetch("/api/info");
      if (!response.ok) throw new Error(String(response.status));
      const info = await response.json();
      ui.backend.textContent = info.backend;
      ui.model.textContent = info.model;
      ui.model.title = info.simulated
        ? `a simulated model at about ${info.tokens_per_second} tokens per second`
        : "an OpenAI-compatible endpoint (OPENAI_BASE_URL)";
      if (info.metrics) startMetrics();
    } catch {
      ui.backend.textContent = "unavailable";
      ui.model.textContent = "unavailable";
    }
  }

  // -- metrics ------------------------------------------------------------------

  const METRICS_EVERY_MS = 2000;

  /** Sums of a Prometheus text exposition's samples by metric name (labels ignored). */
  function parseMetrics(text) {
    const sums = new Map();
    for (const line of text.split("\n")) {
      if (!line || line.startsWith("#")) continue;
      const match = /^([A-Za-z_:][A-Za-z0-9_:]*)(?:\{[^}]*\})?\s+(\S+)/.exec(line);
      if (!match) continue;
      const value = Number(match[2]);
      if (Number.isFinite(value)) sums.set(match[1], (sums.get(match[1]) || 0) + value);
    }
    return sums;
  }

  function showMetrics(sums) {
    const get = (name) => sums.get(`resumable_fast_${name}`) || 0;
    const appends = get("append_duration_seconds_count");
    const shown = {
      streams_active: get("streams_active"),
      streams_started: get("streams_started_total"),
      chunks_persisted: get("chunks_persisted_total"),
      appends,
      append_ms: appends
        ? `${((get("append_duration_seconds_sum") / appends) * 1000).toFixed(2)} ms`
        : "–",
      readers_active: get("readers_active"),
      read_sessions_active: get("read_sessions_active"),
      retries: get("retries_total"),
    };
    for (const cell of ui.metricsPanel.querySelectorAll("[data-metric]")) {
      const value = shown[cell.dataset.metric];
      cell.textContent = typeof value === "number" ? value.toLocaleString("en") : value;
    }
  }

  async function refreshMetrics() {
    try {
      const response = await fetch("/metrics", { cache: "no-store" });
      if (response.ok) showMetrics(parseMetrics(await response.text()));
    } catch {
      // The server is away (a restart): the next poll tries again.
    }
  }

  function startMetrics() {
    ui.metricsPanel.hidden = false;
    refreshMetrics();
    setInterval(refreshMetrics, METRICS_EVERY_MS);
  }

  ui.form.addEventListener("submit", send);
  ui.stop.addEventListener("click", stop);
  ui.newChat.addEventListener("click", newChat);
  ui.prompt.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      if (!ui.send.disabled) ui.form.requestSubmit();
    }
  });
  window.addEventListener("hashchange", () => {
    if (idFromUrl() !== currentId) renderAll();
  });
  window.addEventListener("popstate", () => {
    if (idFromUrl() !== currentId) renderAll();
  });
  window.addEventListener("storage", onStorage);

  loadInfo();
  renderAll();
})();
