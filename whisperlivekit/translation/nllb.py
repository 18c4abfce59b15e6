"""NLLB-200 (No Language Left Behind): 200 languages, from a local directory or the Hugging Face cache.

The weights are not bundled: point `--translation-model` at a directory, or a hub name that is in
the cache (or downloadable). Two formats:
- CTranslate2 (`model.bin` + `tokenizer.json`), fastest on a CPU: convert once with
  `ct2-transformers-converter --model facebook/nllb-200-distilled-600M --quantization int8
   --output_dir nllb-ct2 --copy_files tokenizer.json`;
- transformers (`config.json` + weights), when `transformers` is installed.
NLLB encodes `[source code] tokens </s>` and is forced to start its output with the target code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from whisperlivekit.translation.base import TranslationBackend, TranslationRequest
from whisperlivekit.translation.languages import Language, UnsupportedLanguagePair

DEFAULT_MODEL = "facebook/nllb-200-distilled-600M"
EOS = "</s>"
MAX_DECODING_LENGTH = 256


def find_model(name_or_path: str, cache_dir: str | None = None) -> Path:
    """A local directory, else the hub cache, else a download when the hub is reachable."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(name_or_path, local_files_only=True, cache_dir=cache_dir))
    except Exception:
        pass
    try:
        return Path(snapshot_download(name_or_path, cache_dir=cache_dir))
    except Exception as error:
        raise RuntimeError(
            f"NLLB model {name_or_path!r} is neither a directory nor in the Hugging Face cache, and the hub "
            f"is not reachable ({type(error).__name__}). Give --translation-model a directory "
            "(docs/translation.md)"
        ) from None


class NLLBBackend(TranslationBackend):
    name = "nllb"

    def __init__(self, model: str | None = None, *, device: str = "cpu", compute_type: str = "int8",
                 threads: int = 0, cache_dir: str | None = None, beams: int = 1) -> None:
        self.path = find_model(model or DEFAULT_MODEL, cache_dir)
        self.beams = beams
        self.device = "cpu" if device == "auto" else device
        if (self.path / "model.bin").exists():
            self._load_ctranslate2(compute_type, threads)
        elif (self.path / "config.json").exists():
            self._load_transformers()
        else:
            raise RuntimeError(f"{self.path} holds no CTranslate2 (model.bin) or transformers model")

    def _load_ctranslate2(self, compute_type: str, threads: int) -> None:
        import ctranslate2
        from tokenizers import Tokenizer

        tokenizer = self.path / "tokenizer.json"
        if not tokenizer.exists():
            raise RuntimeError(f"{self.path} has no tokenizer.json: convert with --copy_files tokenizer.json")
        self.kind = "ctranslate2"
        self.tokenizer: Any = Tokenizer.from_file(str(tokenizer))
        self.model: Any = ctranslate2.Translator(
            str(self.path), device=self.device, compute_type=compute_type, intra_threads=threads
        )

    def _load_transformers(self) -> None:
        try:
            from transformers import AutoModelForSeq2SeqLM, AutoTokenizer
        except ImportError:
            raise RuntimeError(
                f"{self.path} is a transformers checkpoint: pip install transformers sentencepiece, "
                "or convert it to CTranslate2 (docs/translation.md)"
            ) from None
        self.kind = "transformers"
        self.tokenizer = AutoTokenizer.from_pretrained(str(self.path))
        self.model = AutoModelForSeq2SeqLM.from_pretrained(str(self.path)).to(self.device).eval()

    def has_token(self, token: str) -> bool:
        if self.kind == "ctranslate2":
            return self.tokenizer.token_to_id(token) is not None
        return token in self.tokenizer.get_vocab()

    def check_pair(self, source: Language | None, target: Language) -> None:
        for language in (source, target):
            if language is not None and (language.nllb is None or not self.has_token(language.nllb)):
                missing = language.nllb or language.name
                raise UnsupportedLanguagePair(self.name, source, target, f"the model has no {missing} token")
        if source is None:
            raise UnsupportedLanguagePair(self.name, source, target, "NLLB needs a known source language")

    def translate(self, request: TranslationRequest) -> str:
        self.check_pair(request.source, request.target)
        assert request.source is not None and request.source.nllb and request.target.nllb
        if not request.text.strip():
            return ""
        if self.kind == "ctranslate2":
            return self._translate_ctranslate2(request.text, request.source.nllb, request.target.nllb)
        return self._translate_transformers(request.text, request.source.nllb, request.target.nllb)

    def source_tokens(self, text: str, source: str) -> list[str]:
        # The tokenizer's own template is fixed to one language: build [src] tokens </s> ourselves.
        pieces = self.tokenizer.encode(text, add_special_tokens=False).tokens
        return [source, *pieces, EOS]

    def _translate_ctranslate2(self, text: str, source: str, target: str) -> str:
        result = self.model.translate_batch(
            [self.source_tokens(text, source)], target_prefix=[[target]], beam_size=self.beams,
            max_decoding_length=MAX_DECODING_LENGTH,
        )[0]
        tokens = result.hypotheses[0][1:]  # drop the forced target code
        ids = [i for i in (self.tokenizer.token_to_id(t) for t in tokens) if i is not None]
        return str(self.tokenizer.decode(ids, skip_special_tokens=True)).strip()

    def _translate_transformers(self, text: str, source: str, target: str) -> str:
        import torch

        self.tokenizer.src_lang = source
        inputs = self.tokenizer(text, return_tensors="pt").to(self.device)
        with torch.inference_mode():
            output = self.model.generate(
                **inputs, forced_bos_token_id=self.tokenizer.convert_tokens_to_ids(target),
                num_beams=self.beams, max_new_tokens=MAX_DECODING_LENGTH,
            )
        return str(self.tokenizer.batch_decode(output, skip_special_tokens=True)[0]).strip()
