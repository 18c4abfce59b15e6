// The user interface shared by the page (main.js) and the extension's side panel: it wires the
// controls in index.html to a LiveSession and renders the TranscriptModel. Transcript text is only
// ever inserted with textContent: nothing from the server is parsed as HTML.

import { asrUrl } from "./asr-client.js";
import { listMicrophones, openMicrophone } from "./audio.js";
import { languageOptions } from "./languages.js";
import { LiveSession, describe, streamFile } from "./session.js";
import { applyTheme, loadSettings, saveSettings } from "./settings.js";
import { FORMATS, SILENCE_SPEAKER, TranscriptModel, formatTranscript, speakerColor } from "./transcript.js";
import { Waveform } from "./waveform.js";

/**
 * @param {object} [options]
 * @param {string} [options.defaultServer] used when the server setting is empty
 * @param {{id: string, label: string, getStream: () => Promise<MediaStream>, monitor?: boolean}[]} [options.sources]
 *   capture sources offered before the microphones (the extension's "This tab")
 */
export function mountApp({ defaultServer = "", sources = [] } = {}) {
  const $ = (id) => document.getElementById(id);
  const ui = {
    status: $("status"),
    server: $("server-url"),
    source: $("source"),
    language: $("language"),
    target: $("target-language"),
    theme: $("theme"),
    record: $("record"),
    timer: $("timer"),
    waveform: $("waveform"),
    lagTranscription: $("lag-transcription"),
    lagDiarization: $("lag-diarization"),
    upload: $("upload"),
    uploadButton: $("upload-button"),
    copy: $("copy"),
    clear: $("clear"),
    message: $("message"),
    transcript: $("transcript"),
  };
  const settings = loadSettings();
  const model = new TranscriptModel();
  const waveform = new Waveform(ui.waveform);
  const renderer = new TranscriptView(ui.transcript);
  let busy = "idle"; // idle | recording | uploading
  let timerInterval = 0;

  // ---- settings ----
  applyTheme(settings.theme);
  ui.theme.value = settings.theme;
  ui.server.value = settings.serverUrl;
  if (defaultServer) ui.server.placeholder = defaultServer;
  fillLanguages(ui.language, [["", "Server default"], ["auto", "Detect automatically"]], settings.language);
  fillLanguages(ui.target, [["", "No translation"]], settings.targetLanguage);
  const save = () => {
    Object.assign(settings, {
      serverUrl: ui.server.value.trim(),
      deviceId: ui.source.value,
      language: ui.language.value,
      targetLanguage: ui.target.value,
      theme: ui.theme.value,
    });
    saveSettings(settings);
  };
  ui.theme.addEventListener("change", () => {
    applyTheme(ui.theme.value);
    save();
  });
  for (const control of [ui.server, ui.source, ui.language, ui.target]) control.addEventListener("change", save);

  const url = () =>
    asrUrl(settings.serverUrl || defaultServer, {
      language: settings.language,
      targetLanguage: settings.targetLanguage,
    });

  // ---- sources: the extension's own first, then the microphones ----
  async function refreshSources() {
    const microphones = await listMicrophones().catch(() => []);
    const wanted = ui.source.value || settings.deviceId;
    ui.source.replaceChildren();
    const add = (value, label) => ui.source.append(new Option(label, value));
    for (const source of sources) add(source.id, source.label);
    if (!microphones.some((mic) => mic.id === "default")) add("", "Default microphone");
    for (const mic of microphones) add(mic.id, mic.id === "default" ? `Default (${mic.label})` : mic.label);
    const values = [...ui.source.options].map((option) => option.value);
    ui.source.value = wanted && values.includes(wanted) ? wanted : values[0];
  }
  refreshSources();
  navigator.mediaDevices?.addEventListener?.("devicechange", refreshSources);
  if (sources.length) ui.source.previousElementSibling.textContent = "Source";

  function getStream() {
    const chosen = sources.find((source) => source.id === ui.source.value);
    return chosen ? chosen.getStream() : openMicrophone(ui.source.value);
  }

  // ---- status, timer, lag ----
  function setStatus(state, text) {
    ui.status.dataset.state = state;
    ui.status.textContent = text;
  }
  function showMessage(text, kind = "warning") {
    ui.message.hidden = !text;
    ui.message.dataset.kind = kind;
    ui.message.textContent = text || "";
  }
  function updateTimer(session) {
    const seconds = Math.floor(session?.elapsed ?? 0);
    ui.timer.textContent = `${String(Math.floor(seconds / 60)).padStart(2, "0")}:${String(seconds % 60).padStart(2, "0")}`;
    ui.timer.dateTime = `PT${seconds}S`;
  }
  function showLag() {
    const show = (element, seconds, name) => {
      element.textContent = `${name} ${seconds.toFixed(1)} s`;
      element.dataset.level = seconds < 1.5 ? "ok" : seconds < 5 ? "warn" : "bad";
    };
    if (busy === "idle") {
      ui.lagTranscription.textContent = "lag –";
      delete ui.lagTranscription.dataset.level;
      ui.lagDiarization.hidden = true;
      return;
    }
    show(ui.lagTranscription, model.lag.transcription, "lag");
    ui.lagDiarization.hidden = !(model.lag.diarization > 0);
    if (!ui.lagDiarization.hidden) show(ui.lagDiarization, model.lag.diarization, "speakers");
  }
  function render() {
    // Follow the newest words, unless the reader has scrolled up to read earlier ones.
    const root = document.scrollingElement || document.documentElement;
    const following = root.scrollTop + root.clientHeight >= root.scrollHeight - 80;
    renderer.render(model);
    if (following && busy !== "idle") root.scrollTop = root.scrollHeight;
    showLag();
    const empty = model.isEmpty;
    ui.copy.disabled = empty;
    ui.clear.disabled = empty || busy !== "idle";
    for (const button of document.querySelectorAll("[data-export]")) button.disabled = empty;
  }
  function setBusy(next) {
    busy = next;
    ui.record.disabled = busy === "uploading";
    ui.uploadButton.disabled = busy !== "idle";
    ui.record.setAttribute("aria-pressed", String(busy === "recording"));
    ui.record.querySelector(".record-label").textContent = busy === "recording" ? "Stop" : "Record";
    render();
  }

  // ---- recording ----
  let session = null;
  ui.record.addEventListener("click", async () => {
    if (session) {
      const current = session;
      ui.record.disabled = true;
      await current.stop();
      ui.record.disabled = false;
      return;
    }
    save();
    try {
      url(); // a bad server address is reported before asking for the microphone
    } catch (error) {
      showMessage(describe(error), "error");
      return;
    }
    showMessage("");
    const chosen = sources.find((source) => source.id === ui.source.value);
    session = new LiveSession({ getStream, url, model, monitor: Boolean(chosen?.monitor) });
    session.addEventListener("update", render);
    session.addEventListener("warning", (event) => showMessage(event.detail.message));
    session.addEventListener("state", (event) => onSessionState(session, event.detail));
    setBusy("recording");
    timerInterval = setInterval(() => updateTimer(session), 250);
    await session.start();
  });

  function onSessionState(current, { state, attempt, delayMs, message, format }) {
    if (state === "connecting") setStatus(state, "Connecting…");
    else if (state === "recording") {
      setStatus(state, format === "pcm" ? "Recording · PCM 16 kHz" : "Recording · WebM/Opus");
      if (current.analyser) waveform.attach(current.analyser);
      if (ui.message.dataset.kind === "reconnect") showMessage(""); // back online
      refreshSources(); // microphone names are known once access is granted
    } else if (state === "reconnecting") {
      const wait = delayMs ? ` in ${(delayMs / 1000).toFixed(1)} s` : "";
      setStatus(state, `Reconnecting${wait} (attempt ${attempt})…`);
      if (message) showMessage(`Connection lost: ${message}. Reconnecting…`, "reconnect");
    } else if (state === "stopping") setStatus(state, "Finishing…");
    else if (state === "idle" || state === "error") {
      clearInterval(timerInterval);
      waveform.detach();
      if (session === current) session = null;
      setBusy("idle");
      if (state === "error") {
        setStatus(state, "Error");
        showMessage(message, "error");
      } else {
        setStatus(state, "Idle");
        if (ui.message.dataset.kind === "reconnect") showMessage("");
      }
    }
  }

  // ---- file upload ----
  ui.uploadButton.addEventListener("click", () => ui.upload.click());
  ui.upload.addEventListener("change", async () => {
    const file = ui.upload.files?.[0];
    ui.upload.value = "";
    if (!file || busy !== "idle") return;
    save();
    showMessage("");
    setBusy("uploading");
    setStatus("uploading", `Opening ${file.name}…`);
    try {
      await streamFile(file, {
        url: url(),
        model,
        onProgress: ({ phase, sent, total }) => {
          if (phase === "decoding") setStatus("uploading", "Decoding…");
          else if (phase === "sending") setStatus("uploading", `Sending ${Math.round((100 * sent) / total)} %`);
          else if (phase === "finishing") setStatus("uploading", "Transcribing…");
          render();
        },
      });
      setStatus("idle", "Done");
    } catch (error) {
      setStatus("error", "Error");
      showMessage(`Could not transcribe ${file.name}: ${describe(error)}`, "error");
    }
    setBusy("idle");
  });

  // ---- copy, export, clear ----
  ui.copy.addEventListener("click", async () => {
    const text = formatTranscript(model.lines, "txt");
    try {
      await navigator.clipboard.writeText(text);
    } catch {
      copyWithSelection(text);
    }
    const label = ui.copy.textContent;
    ui.copy.textContent = "Copied";
    setTimeout(() => (ui.copy.textContent = label), 1500);
  });
  for (const button of document.querySelectorAll("[data-export]")) {
    button.addEventListener("click", () => {
      const format = button.dataset.export;
      const blob = new Blob([formatTranscript(model.lines, format)], { type: FORMATS[format].mime });
      const link = document.createElement("a");
      link.href = URL.createObjectURL(blob);
      link.download = `transcript-${fileStamp()}.${FORMATS[format].extension}`;
      document.body.append(link);
      link.click();
      link.remove();
      setTimeout(() => URL.revokeObjectURL(link.href), 10000);
    });
  }
  ui.clear.addEventListener("click", () => {
    model.clear();
    updateTimer(null);
    render();
  });

  setBusy("idle");
  waveform.draw();
  return { model, ui, get session() { return session; } };
}

function fillLanguages(select, firstOptions, selected) {
  for (const [value, label] of firstOptions) select.append(new Option(label, value));
  for (const { code, name } of languageOptions()) select.append(new Option(`${name} (${code})`, code));
  select.value = [...select.options].some((option) => option.value === selected) ? selected : "";
}

function copyWithSelection(text) {
  const area = document.createElement("textarea");
  area.value = text;
  document.body.append(area);
  area.select();
  document.execCommand("copy");
  area.remove();
}

function fileStamp(date = new Date()) {
  const pad = (n) => String(n).padStart(2, "0");
  return `${date.getFullYear()}${pad(date.getMonth() + 1)}${pad(date.getDate())}-${pad(date.getHours())}${pad(date.getMinutes())}${pad(date.getSeconds())}`;
}

function clock(seconds) {
  const s = Math.max(0, Math.floor(seconds));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const pad = (n) => String(n).padStart(2, "0");
  return h ? `${h}:${pad(m)}:${pad(s % 60)}` : `${m}:${pad(s % 60)}`;
}

/** Renders lines incrementally: a line's DOM is rebuilt only when its content changed. */
class TranscriptView {
  constructor(container) {
    this.container = container;
    this.placeholder = container.querySelector(".placeholder");
    this.nodes = []; // [{key, element}]
    this.pending = null;
  }

  render(model) {
    const lines = model.lines;
    const { buffer } = model;
    const hasPending = Boolean(buffer.transcription || buffer.translation);
    this.placeholder.hidden = lines.length > 0 || hasPending;
    // The buffer joins the last spoken line; with no line yet it stands on its own.
    const lastSpoken = lines.length && lines[lines.length - 1].speaker !== SILENCE_SPEAKER ? lines.length - 1 : -1;
    let previousSpeaker = null; // of the last spoken line: a label only when the speaker changes
    lines.forEach((line, i) => {
      const showSpeaker = line.speaker !== SILENCE_SPEAKER && previousSpeaker !== line.speaker;
      if (line.speaker !== SILENCE_SPEAKER) previousSpeaker = line.speaker;
      const lineBuffer = i === lastSpoken ? buffer : null;
      const key = JSON.stringify([line, showSpeaker, lineBuffer]);
      const existing = this.nodes[i];
      if (existing?.key === key) return;
      const element = buildLine(line, showSpeaker, lineBuffer);
      if (existing) existing.element.replaceWith(element);
      else this.container.insertBefore(element, this.pending?.element ?? null);
      this.nodes[i] = { key, element };
    });
    for (const extra of this.nodes.splice(lines.length)) extra.element.remove();
    // A buffer with no spoken line to join (start of a session, or after a silence line).
    const standalone = lastSpoken === -1 && hasPending;
    const pendingKey = standalone ? JSON.stringify(buffer) : null;
    if (this.pending?.key !== pendingKey) {
      this.pending?.element.remove();
      this.pending = null;
      if (standalone) {
        const element = buildLine({ speaker: 0, text: "", start: null, translation: "" }, false, buffer);
        this.container.append(element);
        this.pending = { key: pendingKey, element };
      }
    }
  }
}

function el(tag, className, text) {
  const element = document.createElement(tag);
  if (className) element.className = className;
  if (text !== undefined) element.textContent = text;
  return element;
}

function buildLine(line, showSpeaker, buffer) {
  if (line.speaker === SILENCE_SPEAKER) {
    const element = el("div", "line silence");
    element.setAttribute("role", "separator");
    element.append(el("span", "", `silence · ${(line.end - line.start).toFixed(1)} s`));
    return element;
  }
  const element = el("div", "line");
  if (line.speaker > 0) {
    element.dataset.speaker = String(line.speaker);
    element.style.setProperty("--speaker", speakerColor(line.speaker));
  }
  if (line.start !== null) {
    const head = el("div", "line-head");
    if (showSpeaker && line.speaker > 0) head.append(el("span", "speaker", `Speaker ${line.speaker}`));
    head.append(el("span", "time", `${clock(line.start)} – ${clock(line.end)}`));
    if (line.detected_language) head.append(el("span", "detected-language", String(line.detected_language)));
    element.append(head);
  }
  const text = el("p", "text");
  text.append(el("span", "committed", line.text));
  if (buffer?.transcription) {
    text.append(document.createTextNode(line.text ? " " : ""));
    const pending = el("span", "buffer", buffer.transcription);
    pending.setAttribute("aria-hidden", "true"); // provisional: screen readers get the committed words
    text.append(pending);
  }
  element.append(text);
  if (line.translation_error && !line.translation) {  // a line is never left silently untranslated
    element.append(el("p", "translation translation-error", `translation failed: ${line.translation_error}`));
  }
  if (line.translation || buffer?.translation) {
    const translation = el("p", "translation");
    translation.append(el("span", "", line.translation));
    if (buffer?.translation) translation.append(el("span", "buffer", ` ${buffer.translation}`));
    element.append(translation);
  }
  return element;
}
