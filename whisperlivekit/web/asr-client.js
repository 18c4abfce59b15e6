// The /asr WebSocket protocol (docs/protocol.md) as a small event-emitting client, plus the URL and
// back-off rules shared by the page and the extension. No DOM access here.

/**
 * The /asr URL for a server setting and the session's languages. Accepts a full ws(s):// URL,
 * an http(s):// address (converted), or a bare host:port; a URL without a path gets /asr.
 */
export function asrUrl(server, { language = "", targetLanguage = "" } = {}, base = globalThis.location?.href) {
  let text = (server || "").trim();
  if (!text) {
    if (!base || !/^https?:/.test(base)) throw new Error("no server address set");
    text = new URL("asr", base).href; // next to the page, so a path prefix behind a proxy still works
  }
  if (!/^[a-z][a-z0-9+.-]*:\/\//i.test(text)) text = `ws://${text}`;
  const url = new URL(text);
  if (url.protocol === "http:") url.protocol = "ws:";
  else if (url.protocol === "https:") url.protocol = "wss:";
  if (url.protocol !== "ws:" && url.protocol !== "wss:") throw new Error(`not a WebSocket address: ${text}`);
  if (url.pathname === "/" || url.pathname === "") url.pathname = "/asr";
  if (language) url.searchParams.set("language", language);
  else url.searchParams.delete("language");
  if (targetLanguage) url.searchParams.set("target_language", targetLanguage);
  else url.searchParams.delete("target_language");
  return url.href;
}

/** Delay before reconnection attempt `attempt` (0-based): exponential, capped, with jitter. */
export function backoffDelay(attempt, { baseMs = 500, maxMs = 10000, jitter = 0.2, random = Math.random } = {}) {
  const plain = Math.min(maxMs, baseMs * 2 ** Math.max(0, attempt));
  return Math.round(plain * (1 - jitter + 2 * jitter * random()));
}

/**
 * One WebSocket session. Events (CustomEvent detail):
 *   config {useAudioWorklet}, transcript <update>, warning {message}, error {message},
 *   ready {} (ready_to_stop), close {code, reason, clean}
 */
export class AsrConnection extends EventTarget {
  constructor(url) {
    super();
    this.url = url;
    this.socket = null;
    this.config = null;
    this.lastError = null;
    this.finished = false; // ready_to_stop received
    this.closed = false;
  }

  /** Connect and resolve with the server's config message (or reject if it never comes). */
  open({ timeoutMs = 15000 } = {}) {
    return new Promise((resolve, reject) => {
      let settled = false;
      const settle = (fn, value) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        fn(value);
      };
      const timer = setTimeout(() => {
        settle(reject, new Error("the server did not answer in time"));
        this.close();
      }, timeoutMs);
      let socket;
      try {
        socket = new WebSocket(this.url);
      } catch (error) {
        settle(reject, error);
        return;
      }
      this.socket = socket;
      socket.binaryType = "arraybuffer";
      socket.onmessage = (event) => {
        let message;
        try {
          message = JSON.parse(event.data);
        } catch {
          return;
        }
        if (message.type === "config") {
          this.config = message;
          this.emit("config", message);
          settle(resolve, message);
        } else if (message.type === "transcript") {
          this.emit("transcript", message);
        } else if (message.type === "warning") {
          this.emit("warning", { message: String(message.warning ?? "") });
        } else if (message.type === "error") {
          this.lastError = String(message.error ?? "error");
          this.emit("error", { message: this.lastError });
        } else if (message.type === "ready_to_stop") {
          this.finished = true;
          this.emit("ready", {});
        }
      };
      socket.onclose = (event) => {
        this.closed = true;
        const detail = { code: event.code, reason: event.reason || this.lastError || "", clean: this.finished };
        settle(reject, new Error(this.lastError || `connection closed (${event.code})`));
        this.emit("close", detail);
      };
      socket.onerror = () => {}; // a close event always follows, with the code
    });
  }

  get isOpen() {
    return this.socket?.readyState === WebSocket.OPEN;
  }

  send(data) {
    if (this.isOpen) this.socket.send(data);
  }

  /** Bytes queued but not yet sent (for pacing uploads). */
  get bufferedAmount() {
    return this.socket?.bufferedAmount ?? 0;
  }

  /** End the stream (empty frame) and wait for ready_to_stop or the socket closing. */
  finish({ timeoutMs = 60000 } = {}) {
    return new Promise((resolve) => {
      if (this.finished || this.closed || !this.isOpen) {
        resolve(this.finished);
        return;
      }
      const done = () => {
        clearTimeout(timer);
        this.removeEventListener("ready", done);
        this.removeEventListener("close", done);
        resolve(this.finished);
      };
      const timer = setTimeout(done, timeoutMs);
      this.addEventListener("ready", done);
      this.addEventListener("close", done);
      this.socket.send(new ArrayBuffer(0));
    });
  }

  close() {
    if (this.socket && this.socket.readyState <= WebSocket.OPEN) this.socket.close(1000);
  }

  emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }
}
