// Whisper's language codes; names come from the browser (Intl.DisplayNames) in the user's language.
export const WHISPER_LANGUAGES = (
  "af am ar as az ba be bg bn bo br bs ca cs cy da de el en es et eu fa fi fo fr gl gu ha haw he hi hr ht " +
  "hu hy id is it ja jw ka kk km kn ko la lb ln lo lt lv mg mi mk ml mn mr ms mt my ne nl nn no oc pa pl ps " +
  "pt ro ru sa sd si sk sl sn so sq sr su sv sw ta te tg th tk tl tr tt uk ur uz vi yi yo zh yue"
).split(" ");

/** [{code, name}] sorted by name. */
export function languageOptions(locale = globalThis.navigator?.language || "en") {
  let names = null;
  try {
    names = new Intl.DisplayNames([locale, "en"], { type: "language" });
  } catch {
    // very old browsers: show the codes
  }
  const name = (code) => {
    try {
      return names?.of(code === "jw" ? "jv" : code) || code;
    } catch {
      return code;
    }
  };
  return WHISPER_LANGUAGES.map((code) => ({ code, name: name(code) })).sort((a, b) => a.name.localeCompare(b.name));
}
