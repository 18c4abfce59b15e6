// The side panel: the page's interface (web/, copied from whisperlivekit/web by the build), with the
// current tab as its first audio source and a server address to set.
import { mountApp } from "./web/app.js";
import { captureCurrentTab } from "./tab-capture.js";

mountApp({
  defaultServer: "ws://localhost:8000/asr",
  sources: [{ id: "tab", label: "This tab", getStream: captureCurrentTab, monitor: true }],
});
