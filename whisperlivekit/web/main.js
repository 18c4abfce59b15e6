// The page served at `/`: the shared interface, recording from the microphones.
import { mountApp } from "./app.js";

// Exposed for the browser console (inspect `whisperLiveKit.session`, `whisperLiveKit.model`).
window.whisperLiveKit = mountApp();
