"""One table of languages: Whisper's codes, ISO 639-1 / 639-3, and NLLB-200's `eng_Latn` codes.

Users write languages every way (`zh`, `zh-CN`, `zh_Hans`, `zho_Hans`, `chi`, `Chinese`); the
original project passed them through unchanged and NLLB failed on anything but its own spelling.
`resolve_language` accepts all of them and returns one `Language`; an unknown code is a ValueError
that lists what is accepted.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache


@dataclass(frozen=True, slots=True)
class Language:
    iso1: str | None  # ISO 639-1 ("de"), None where the language has none
    iso3: str  # ISO 639-3 ("deu"); a macrolanguage's code ("zho", "ara")
    nllb: str | None  # NLLB-200 code with script ("deu_Latn"), None where NLLB lacks it
    whisper: str | None  # Whisper's code ("de"; Javanese is "jw"), None where Whisper lacks it
    name: str

    @property
    def code(self) -> str:
        """The short code shown to users and sent to backends that take ISO codes."""
        return self.iso1 or self.iso3

    def __str__(self) -> str:
        return self.code


# iso1, iso3, nllb, whisper, English name. NLLB uses an individual language where ISO has a
# macrolanguage (Arabic arb, Persian pes, Malay zsm, Swahili swh, ...): both codes are accepted.
_TABLE: tuple[tuple[str | None, str, str | None, str | None, str], ...] = (
    ("af", "afr", "afr_Latn", "af", "Afrikaans"),
    ("am", "amh", "amh_Ethi", "am", "Amharic"),
    ("ar", "ara", "arb_Arab", "ar", "Arabic"),
    ("as", "asm", "asm_Beng", "as", "Assamese"),
    ("az", "aze", "azj_Latn", "az", "Azerbaijani"),
    ("ba", "bak", "bak_Cyrl", "ba", "Bashkir"),
    ("be", "bel", "bel_Cyrl", "be", "Belarusian"),
    ("bg", "bul", "bul_Cyrl", "bg", "Bulgarian"),
    ("bn", "ben", "ben_Beng", "bn", "Bengali"),
    ("bo", "bod", "bod_Tibt", "bo", "Tibetan"),
    ("br", "bre", None, "br", "Breton"),
    ("bs", "bos", "bos_Latn", "bs", "Bosnian"),
    ("ca", "cat", "cat_Latn", "ca", "Catalan"),
    ("cs", "ces", "ces_Latn", "cs", "Czech"),
    ("cy", "cym", "cym_Latn", "cy", "Welsh"),
    ("da", "dan", "dan_Latn", "da", "Danish"),
    ("de", "deu", "deu_Latn", "de", "German"),
    ("el", "ell", "ell_Grek", "el", "Greek"),
    ("en", "eng", "eng_Latn", "en", "English"),
    ("eo", "epo", "epo_Latn", None, "Esperanto"),
    ("es", "spa", "spa_Latn", "es", "Spanish"),
    ("et", "est", "est_Latn", "et", "Estonian"),
    ("eu", "eus", "eus_Latn", "eu", "Basque"),
    ("fa", "fas", "pes_Arab", "fa", "Persian"),
    ("fi", "fin", "fin_Latn", "fi", "Finnish"),
    ("fo", "fao", "fao_Latn", "fo", "Faroese"),
    ("fr", "fra", "fra_Latn", "fr", "French"),
    ("ga", "gle", "gle_Latn", None, "Irish"),
    ("gl", "glg", "glg_Latn", "gl", "Galician"),
    ("gu", "guj", "guj_Gujr", "gu", "Gujarati"),
    ("ha", "hau", "hau_Latn", "ha", "Hausa"),
    (None, "haw", None, "haw", "Hawaiian"),
    ("he", "heb", "heb_Hebr", "he", "Hebrew"),
    ("hi", "hin", "hin_Deva", "hi", "Hindi"),
    ("hr", "hrv", "hrv_Latn", "hr", "Croatian"),
    ("ht", "hat", "hat_Latn", "ht", "Haitian Creole"),
    ("hu", "hun", "hun_Latn", "hu", "Hungarian"),
    ("hy", "hye", "hye_Armn", "hy", "Armenian"),
    ("id", "ind", "ind_Latn", "id", "Indonesian"),
    ("is", "isl", "isl_Latn", "is", "Icelandic"),
    ("it", "ita", "ita_Latn", "it", "Italian"),
    ("ja", "jpn", "jpn_Jpan", "ja", "Japanese"),
    ("jv", "jav", "jav_Latn", "jw", "Javanese"),
    ("ka", "kat", "kat_Geor", "ka", "Georgian"),
    ("kk", "kaz", "kaz_Cyrl", "kk", "Kazakh"),
    ("km", "khm", "khm_Khmr", "km", "Khmer"),
    ("kn", "kan", "kan_Knda", "kn", "Kannada"),
    ("ko", "kor", "kor_Hang", "ko", "Korean"),
    ("la", "lat", None, "la", "Latin"),
    ("lb", "ltz", "ltz_Latn", "lb", "Luxembourgish"),
    ("ln", "lin", "lin_Latn", "ln", "Lingala"),
    ("lo", "lao", "lao_Laoo", "lo", "Lao"),
    ("lt", "lit", "lit_Latn", "lt", "Lithuanian"),
    ("lv", "lav", "lvs_Latn", "lv", "Latvian"),
    ("mg", "mlg", "plt_Latn", "mg", "Malagasy"),
    ("mi", "mri", "mri_Latn", "mi", "Maori"),
    ("mk", "mkd", "mkd_Cyrl", "mk", "Macedonian"),
    ("ml", "mal", "mal_Mlym", "ml", "Malayalam"),
    ("mn", "mon", "khk_Cyrl", "mn", "Mongolian"),
    ("mr", "mar", "mar_Deva", "mr", "Marathi"),
    ("ms", "msa", "zsm_Latn", "ms", "Malay"),
    ("mt", "mlt", "mlt_Latn", "mt", "Maltese"),
    ("my", "mya", "mya_Mymr", "my", "Burmese"),
    ("ne", "nep", "npi_Deva", "ne", "Nepali"),
    ("nl", "nld", "nld_Latn", "nl", "Dutch"),
    ("nn", "nno", "nno_Latn", "nn", "Norwegian Nynorsk"),
    ("no", "nor", "nob_Latn", "no", "Norwegian"),
    ("oc", "oci", "oci_Latn", "oc", "Occitan"),
    ("pa", "pan", "pan_Guru", "pa", "Punjabi"),
    ("pl", "pol", "pol_Latn", "pl", "Polish"),
    ("ps", "pus", "pbt_Arab", "ps", "Pashto"),
    ("pt", "por", "por_Latn", "pt", "Portuguese"),
    ("ro", "ron", "ron_Latn", "ro", "Romanian"),
    ("ru", "rus", "rus_Cyrl", "ru", "Russian"),
    ("sa", "san", "san_Deva", "sa", "Sanskrit"),
    ("sd", "snd", "snd_Arab", "sd", "Sindhi"),
    ("si", "sin", "sin_Sinh", "si", "Sinhala"),
    ("sk", "slk", "slk_Latn", "sk", "Slovak"),
    ("sl", "slv", "slv_Latn", "sl", "Slovenian"),
    ("sn", "sna", "sna_Latn", "sn", "Shona"),
    ("so", "som", "som_Latn", "so", "Somali"),
    ("sq", "sqi", "als_Latn", "sq", "Albanian"),
    ("sr", "srp", "srp_Cyrl", "sr", "Serbian"),
    ("su", "sun", "sun_Latn", "su", "Sundanese"),
    ("sv", "swe", "swe_Latn", "sv", "Swedish"),
    ("sw", "swa", "swh_Latn", "sw", "Swahili"),
    ("ta", "tam", "tam_Taml", "ta", "Tamil"),
    ("te", "tel", "tel_Telu", "te", "Telugu"),
    ("tg", "tgk", "tgk_Cyrl", "tg", "Tajik"),
    ("th", "tha", "tha_Thai", "th", "Thai"),
    ("tk", "tuk", "tuk_Latn", "tk", "Turkmen"),
    ("tl", "tgl", "tgl_Latn", "tl", "Tagalog"),
    ("tr", "tur", "tur_Latn", "tr", "Turkish"),
    ("tt", "tat", "tat_Cyrl", "tt", "Tatar"),
    ("uk", "ukr", "ukr_Cyrl", "uk", "Ukrainian"),
    ("ur", "urd", "urd_Arab", "ur", "Urdu"),
    ("uz", "uzb", "uzn_Latn", "uz", "Uzbek"),
    ("vi", "vie", "vie_Latn", "vi", "Vietnamese"),
    ("yi", "yid", "ydd_Hebr", "yi", "Yiddish"),
    ("yo", "yor", "yor_Latn", "yo", "Yoruba"),
    (None, "yue", "yue_Hant", "yue", "Cantonese"),
    ("zh", "zho", "zho_Hans", "zh", "Chinese"),
)
# Codes that name a script or region of a language in the table.
_TRADITIONAL_CHINESE = Language("zh", "zho", "zho_Hant", "zh", "Chinese (Traditional)")
_VARIANTS: dict[str, Language] = {
    "zh-hant": _TRADITIONAL_CHINESE,
    "zh-tw": _TRADITIONAL_CHINESE,
    "zh-hk": _TRADITIONAL_CHINESE,
    "zh-mo": _TRADITIONAL_CHINESE,
    "zho_hant": _TRADITIONAL_CHINESE,
}
# ISO 639-2/B bibliographic codes people still use.
_ISO639_2B = {"chi": "zho", "ger": "deu", "fre": "fra", "dut": "nld", "gre": "ell", "per": "fas",
              "cze": "ces", "slo": "slk", "rum": "ron", "arm": "hye", "geo": "kat", "baq": "eus",
              "ice": "isl", "mac": "mkd", "mao": "mri", "may": "msa", "bur": "mya", "tib": "bod",
              "wel": "cym", "alb": "sqi"}
_SEPARATOR = re.compile(r"[-_]")


@cache
def _index() -> dict[str, Language]:
    index: dict[str, Language] = {}
    for iso1, iso3, nllb, whisper, name in _TABLE:
        language = Language(iso1, iso3, nllb, whisper, name)
        keys = [iso3, name.lower(), *(k for k in (iso1, whisper) if k)]
        if nllb:
            keys += [nllb.lower(), nllb.split("_")[0]]  # eng_latn, arb
        for key in keys:
            index.setdefault(key, language)
    index.update(_VARIANTS)
    for bibliographic, iso3 in _ISO639_2B.items():
        index.setdefault(bibliographic, index[iso3])
    return index


def resolve_language(code: str) -> Language:
    """`zh`, `zh-CN`, `zh_Hans`, `zho_Hans`, `chi`, `Chinese` -> Chinese; ValueError if unknown."""
    key = code.strip().lower()
    index = _index()
    if key in index:
        return index[key]
    primary, *rest = _SEPARATOR.split(key)
    variant = f"{primary}-{rest[0]}" if rest else primary
    if variant in index:  # zh-TW, zh-Hant-TW
        return index[variant]
    if primary in index:  # pt-BR, en-US, zh-CN, zho-Hans
        return index[primary]
    raise ValueError(
        f"unknown language {code!r}: use an ISO 639-1/639-3 code (de, deu), a Whisper code, "
        "an NLLB code (deu_Latn) or an English name"
    )


def all_languages() -> list[Language]:
    return [Language(*row) for row in _TABLE]


class UnsupportedLanguagePair(ValueError):
    """A backend cannot translate from `source` into `target`."""

    def __init__(self, backend: str, source: Language | None, target: Language, hint: str) -> None:
        origin = source.name if source else "the detected language"
        super().__init__(f"the {backend} translation backend cannot translate {origin} into {target.name}: "
                         f"{hint}")
