// User settings remembered in localStorage (the page's origin, or the extension's).
const KEY = "whisperlivekit.settings";

export const DEFAULTS = Object.freeze({
  serverUrl: "", // empty: the server that served the page
  deviceId: "", // empty: the default microphone; "tab": the current tab (extension)
  language: "", // empty: the server's --language
  targetLanguage: "",
  theme: "system", // system | light | dark
});

export function loadSettings(storage = globalThis.localStorage) {
  try {
    const saved = JSON.parse(storage?.getItem(KEY) || "{}");
    const settings = { ...DEFAULTS };
    for (const key of Object.keys(DEFAULTS)) if (typeof saved[key] === "string") settings[key] = saved[key];
    return settings;
  } catch {
    return { ...DEFAULTS };
  }
}

export function saveSettings(settings, storage = globalThis.localStorage) {
  try {
    storage?.setItem(KEY, JSON.stringify(settings));
  } catch {
    // private mode or full storage: settings last for this visit only
  }
}

/** System follows the operating system's preference through CSS (prefers-color-scheme). */
export function applyTheme(theme, root = document.documentElement) {
  root.dataset.theme = ["light", "dark"].includes(theme) ? theme : "system";
}
