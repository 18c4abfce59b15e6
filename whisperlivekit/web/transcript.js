// The transcript as the page knows it: committed lines of every connection of a recording (a
// reconnection starts a new server session whose clock restarts at 0, so each segment keeps the
// offset at which it began), the live buffers and the lag. No DOM access here.

export const SILENCE_SPEAKER = -2;

export class TranscriptModel {
  constructor() {
    this.clear();
  }

  clear() {
    this.segments = []; // [{offset, lines}]
    this.buffer = { transcription: "", diarization: "", translation: "" };
    this.lag = { transcription: 0, diarization: 0 };
    this.status = "";
    this.version = 0;
  }

  /** A new server session starts; its times are relative to `offset` seconds of the recording. */
  beginSegment(offset = 0) {
    const last = this.segments[this.segments.length - 1];
    if (last && last.lines.length === 0) last.offset = offset;
    else this.segments.push({ offset, lines: [] });
    this.buffer = { transcription: "", diarization: "", translation: "" };
    this.version++;
  }

  /** Apply one `transcript` message: the whole committed transcript of the current session. */
  applyUpdate(update) {
    if (!this.segments.length) this.beginSegment(0);
    const segment = this.segments[this.segments.length - 1];
    segment.lines = (update.lines || []).map((line) => ({
      speaker: Number(line.speaker ?? 1),
      text: String(line.text ?? ""),
      start: Number(line.start ?? 0),
      end: Number(line.end ?? 0),
      translation: String(line.translation ?? ""),
      translation_error: line.translation_error ? String(line.translation_error) : "",
      detected_language: line.detected_language ?? null,
    }));
    this.buffer = {
      transcription: String(update.buffer_transcription ?? ""),
      diarization: String(update.buffer_diarization ?? ""),
      translation: String(update.buffer_translation ?? ""),
    };
    this.lag = {
      transcription: Number(update.remaining_time_transcription ?? 0),
      diarization: Number(update.remaining_time_diarization ?? 0),
    };
    this.status = String(update.status ?? "");
    this.version++;
  }

  /** The buffers are committed or gone once a session ends. */
  endSegment() {
    this.buffer = { transcription: "", diarization: "", translation: "" };
    this.lag = { transcription: 0, diarization: 0 };
    this.version++;
  }

  /** All committed lines, with times on the recording's clock. */
  get lines() {
    const all = [];
    for (const { offset, lines } of this.segments) {
      for (const line of lines) all.push({ ...line, start: line.start + offset, end: line.end + offset });
    }
    return all;
  }

  get spokenLines() {
    return this.lines.filter((line) => line.speaker !== SILENCE_SPEAKER && line.text.trim());
  }

  get isEmpty() {
    return this.spokenLines.length === 0 && !this.buffer.transcription;
  }
}

// ---- export formats (the same shapes as whisperlivekit/output/formats.py) ----

export function timestamp(seconds, decimalMarker) {
  let millis = Math.round(Math.max(0, seconds) * 1000);
  const hours = Math.floor(millis / 3600000);
  millis -= hours * 3600000;
  const minutes = Math.floor(millis / 60000);
  millis -= minutes * 60000;
  const secs = Math.floor(millis / 1000);
  millis -= secs * 1000;
  const pad = (n, w = 2) => String(n).padStart(w, "0");
  return `${pad(hours)}:${pad(minutes)}:${pad(secs)}${decimalMarker}${pad(millis, 3)}`;
}

function speakerCount(lines) {
  return new Set(lines.map((line) => line.speaker)).size;
}

function cueText(line, labelled) {
  const text = labelled ? `Speaker ${line.speaker}: ${line.text.trim()}` : line.text.trim();
  return line.translation ? `${text}\n${line.translation.trim()}` : text;
}

export const FORMATS = {
  txt: { mime: "text/plain", extension: "txt" },
  srt: { mime: "application/x-subrip", extension: "srt" },
  vtt: { mime: "text/vtt", extension: "vtt" },
  json: { mime: "application/json", extension: "json" },
};

/** The transcript as txt, srt, vtt or json text. */
export function formatTranscript(lines, format) {
  const spoken = lines.filter((line) => line.speaker !== SILENCE_SPEAKER && line.text.trim());
  const labelled = speakerCount(spoken) > 1; // label speakers only when there is more than one
  if (format === "txt") return spoken.map((line) => cueText(line, labelled)).join("\n") + "\n";
  if (format === "json") return JSON.stringify({ lines }, null, 2) + "\n";
  if (format === "srt") {
    return spoken
      .map((line, i) => `${i + 1}\n${timestamp(line.start, ",")} --> ${timestamp(line.end, ",")}\n${cueText(line, labelled)}\n`)
      .join("\n");
  }
  if (format === "vtt") {
    const cues = spoken.map(
      (line) => `${timestamp(line.start, ".")} --> ${timestamp(line.end, ".")}\n${cueText(line, labelled)}\n`,
    );
    return "WEBVTT\n\n" + cues.join("\n");
  }
  throw new Error(`unknown format ${format}`);
}

// ---- speaker colours ----

const PALETTE = ["#2563eb", "#d9480f", "#0f9d58", "#9c36b5", "#c2255c", "#0b7285", "#e67700", "#5f3dc4"];

/** A distinct colour per speaker: a fixed palette, then hues spread by the golden angle. */
export function speakerColor(speaker) {
  const index = Math.max(0, Number(speaker) - 1);
  if (index < PALETTE.length) return PALETTE[index];
  return `hsl(${Math.round((index * 137.508) % 360)} 65% 45%)`;
}
