"""Apertium: Debian's rule-based translation pairs (`apt-get install apertium apertium-eng-spa`).

Fast and fully offline, but literal: good enough to follow a conversation between close languages
(es-pt, es-ca, fr-es), rough for English-Spanish. One `apertium` process per sentence (~0.2 s).
"""

from __future__ import annotations

import shutil
import subprocess

from whisperlivekit.translation.base import TranslationBackend, TranslationRequest
from whisperlivekit.translation.languages import Language, UnsupportedLanguagePair

TIMEOUT_S = 30.0


class ApertiumBackend(TranslationBackend):
    name = "apertium"

    def __init__(self, binary: str = "apertium") -> None:
        found = shutil.which(binary)
        if found is None:
            raise RuntimeError(
                "the apertium translation backend needs Debian's apertium and a language pair: "
                "apt-get install apertium apertium-eng-spa (see `apt-cache search apertium-` for pairs)"
            )
        self.binary = found
        self.modes = self._list_modes()
        if not self.modes:
            raise RuntimeError("no apertium language pair installed: e.g. apt-get install apertium-eng-spa")

    def _list_modes(self) -> list[str]:
        listed = subprocess.run([self.binary, "-l"], capture_output=True, text=True, timeout=TIMEOUT_S)
        return [line.strip() for line in listed.stdout.splitlines() if line.strip()]

    def mode(self, source: Language | None, target: Language) -> str:
        if source is None:
            raise UnsupportedLanguagePair(self.name, source, target, "apertium needs a known source language")
        # Pairs are named with ISO 639-3 (eng-spa) or, in older packages, 639-1 codes (es-pt).
        for src in dict.fromkeys(c for c in (source.iso3, source.iso1) if c):
            for tgt in dict.fromkeys(c for c in (target.iso3, target.iso1) if c):
                if f"{src}-{tgt}" in self.modes:
                    return f"{src}-{tgt}"
        raise UnsupportedLanguagePair(
            self.name, source, target,
            f"installed pairs: {', '.join(self.modes)} (apt-cache search apertium- lists more)",
        )

    def check_pair(self, source: Language | None, target: Language) -> None:
        if source is not None:
            self.mode(source, target)

    def translate(self, request: TranslationRequest) -> str:
        mode = self.mode(request.source, request.target)
        done = subprocess.run(
            [self.binary, "-u", mode], input=request.text, capture_output=True, text=True, timeout=TIMEOUT_S
        )
        if done.returncode != 0:
            raise RuntimeError(f"apertium {mode} failed: {done.stderr.strip()[:200]}")
        return " ".join(done.stdout.split())
