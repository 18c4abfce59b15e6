"""Our PyTorch Whisper against faster-whisper/CTranslate2 on the packaged tiny.en weights."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from whisperlivekit.asr.model_files import ModelNotFoundError, resolve_model

torch = pytest.importorskip("torch")
pytest.importorskip("faster_whisper")

from whisperlivekit.whisper.loading import (  # noqa: E402
    load_model,
    load_tokenizer,
    openai_alignment_heads,
    save_openai_checkpoint,
)
from whisperlivekit.whisper.model import (  # noqa: E402
    Whisper,
    greedy_decode,
    log_mel_spectrogram,
    mel_filters_np,
    pad_or_trim,
)

JFK = Path("/work/shared/eval/classic/jfk.wav")
PHRASE = "ask not what your country can do for you"


def _tiny_en_dir() -> Path | None:
    try:
        return resolve_model("tiny.en", download=False).path
    except ModelNotFoundError:
        return None


MODEL_DIR = _tiny_en_dir()
pytestmark = pytest.mark.skipif(
    MODEL_DIR is None or not JFK.exists(), reason="tiny.en weights or jfk.wav absent"
)


@pytest.fixture(scope="module", autouse=True)
def _threads():
    old = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def audio() -> np.ndarray:
    from faster_whisper.audio import decode_audio

    return decode_audio(str(JFK))


@pytest.fixture(scope="module")
def loaded():
    return load_model(MODEL_DIR)


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(MODEL_DIR)


@pytest.fixture(scope="module")
def prompt(tokenizer) -> list[int]:
    return [*tokenizer.sot_sequence, tokenizer.no_timestamps]


@pytest.fixture(scope="module")
def short_features(loaded, audio):
    """Only the 11 s we have: 1100 mel frames -> 550 audio frames."""
    model, _ = loaded
    with torch.inference_mode():
        return model.embed_audio(log_mel_spectrogram(audio))


@pytest.fixture(scope="module")
def jfk_tokens(loaded, short_features, tokenizer, prompt) -> list[int]:
    model, meta = loaded
    eot, suppress, begin = tokenizer.eot, meta.suppress_ids, meta.suppress_ids_begin
    return greedy_decode(model, short_features, prompt, eot, suppress, begin)[0]


def test_mel_filters_match_faster_whisper():
    from faster_whisper.feature_extractor import FeatureExtractor

    for n_mels in (80, 128):
        ref = FeatureExtractor.get_mel_filters(16000, 400, n_mels)
        np.testing.assert_allclose(mel_filters_np(n_mels), ref, rtol=0, atol=1e-7)


def test_mel_matches_feature_extractor(audio):
    from faster_whisper.feature_extractor import FeatureExtractor

    fe = FeatureExtractor(80)
    ref = fe(audio)  # padding=160: what faster-whisper feeds CTranslate2
    ours = log_mel_spectrogram(audio, padding=160).numpy()
    assert ours.shape == ref.shape == (80, len(audio) // 160 + 1)
    np.testing.assert_allclose(ours, ref, atol=2e-4)
    chunk = audio[16000 : 16000 * 5]  # a chunk, no 30 s padding
    np.testing.assert_allclose(log_mel_spectrogram(chunk).numpy(), fe(chunk, padding=0), atol=2e-4)
    batch = log_mel_spectrogram(np.stack([chunk, chunk[::-1].copy()]))
    assert batch.shape == (2, 80, 400)
    np.testing.assert_allclose(batch[0].numpy(), fe(chunk, padding=0), atol=2e-4)


def test_greedy_matches_ctranslate2_exactly(loaded, audio, tokenizer, prompt):
    import ctranslate2
    from faster_whisper import WhisperModel
    from faster_whisper.feature_extractor import FeatureExtractor

    model, meta = loaded
    mel = pad_or_trim(torch.from_numpy(FeatureExtractor(80)(audio)))  # the same 30 s input for both
    assert mel.shape == (80, 3000)
    ct2 = WhisperModel(str(MODEL_DIR), device="cpu", compute_type="float32", cpu_threads=2).model
    ref = ct2.generate(
        ctranslate2.StorageView.from_array(np.ascontiguousarray(mel.numpy()[None])),
        [prompt],
        beam_size=1,
        suppress_blank=True,
        suppress_tokens=[-1],
        max_length=448,
    )[0].sequences_ids[0]
    with torch.inference_mode():
        ours = greedy_decode(
            model, model.embed_audio(mel), prompt, tokenizer.eot, meta.suppress_ids, meta.suppress_ids_begin
        )[0]
    assert ours == ref
    assert PHRASE in tokenizer.decode(ours).lower()


def test_unpadded_encoding_decodes_jfk(short_features, jfk_tokens, tokenizer):
    assert short_features.shape == (1, 550, 384)
    assert PHRASE in tokenizer.decode(jfk_tokens).lower()


def test_encoder_rejects_more_than_30s(loaded):
    with pytest.raises(ValueError):
        loaded[0].embed_audio(torch.zeros(80, 3002))


def test_kv_cache_steps_equal_full_forward(loaded, audio, short_features, jfk_tokens, prompt):
    model, _ = loaded
    seq = torch.tensor([prompt + jfk_tokens[:12]])
    with torch.inference_mode():
        # A batch of two different audios of the same length: JFK and JFK rotated by 3 s.
        other = model.embed_audio(log_mel_spectrogram(np.roll(audio, 16000 * 3)))
        feats = torch.cat([short_features, other])
        seqs = seq.expand(2, -1)
        full = model.logits(seqs, model.new_cache(feats))
        cache = model.new_cache(feats)
        steps = [model.logits(seqs[:, : len(prompt)], cache)]
        for i in range(len(prompt), seqs.shape[1]):
            steps.append(model.logits_and_alignment(seqs[:, i : i + 1], cache)[0])  # explicit path too
        assert cache.length == seqs.shape[1]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=2e-3, rtol=1e-4)
    # The uncached reference from the mel agrees as well.
    with torch.inference_mode():
        ref = model(log_mel_spectrogram(audio), seq)
    torch.testing.assert_close(ref, full[:1], atol=2e-3, rtol=1e-4)


def test_alignment_heads_cross_attention(loaded, short_features, jfk_tokens, prompt):
    model, meta = loaded
    assert meta.alignment_heads == [(1, 0), (2, 0), (2, 5), (3, 0), (3, 1), (3, 2), (3, 3), (3, 4)]
    assert model.alignment_heads == meta.alignment_heads
    with torch.inference_mode():
        cache = model.new_cache(short_features)
        logits, attn = model.logits_and_alignment(torch.tensor([prompt + jfk_tokens]), cache)
        plain = model.logits(torch.tensor([prompt + jfk_tokens]), model.new_cache(short_features))
    n = len(prompt) + len(jfk_tokens)
    assert attn.shape == (1, len(meta.alignment_heads), n, 550)
    torch.testing.assert_close(attn.sum(-1), torch.ones(1, len(meta.alignment_heads), n))
    torch.testing.assert_close(logits, plain, atol=2e-3, rtol=1e-4)
    # Averaged over heads, attention walks forward through the audio (what AlignAtt relies on).
    peak = attn[0, :, len(prompt) :].mean(0).argmax(-1)
    assert peak[-3:].float().mean() > peak[:3].float().mean()


def test_cache_reorder_for_beams(loaded, short_features, prompt, jfk_tokens):
    model, _ = loaded
    t = jfk_tokens
    p = torch.tensor([prompt + t[:3]])

    def solo(extra: list[int]) -> torch.Tensor:
        return model.logits(torch.cat([p, torch.tensor([extra])], 1), model.new_cache(short_features))[:, -1]

    with torch.inference_mode():
        # One audio shared by the beams: a batch-1 cache is expanded into 3 hypotheses...
        cache = model.new_cache(short_features)
        model.logits(p, cache)
        cache.reorder([0, 0, 0])
        model.logits(torch.tensor([[t[3]], [t[4]], [t[5]]]), cache)
        # ...then the search keeps beams 2 and 0, in that order.
        cache.reorder([2, 0])
        got = model.logits(torch.tensor([[t[6]], [t[6]]]), cache)[:, -1]
        want = torch.cat([solo([t[5], t[6]]), solo([t[3], t[6]])])
        # A batch of two different audios: reordering swaps their cross-attention K/V too.
        feats = torch.cat([short_features, short_features.flip(1)])
        c2 = model.new_cache(feats)
        model.logits(p.expand(2, -1), c2)
        c2.reorder([1, 0])
        swapped = model.logits(torch.tensor([[t[3]]] * 2), c2)[:, -1]
        c3 = model.new_cache(feats.flip(0))
        model.logits(p.expand(2, -1), c3)
        direct = model.logits(torch.tensor([[t[3]]] * 2), c3)[:, -1]
    assert cache.length == p.shape[1] + 2
    torch.testing.assert_close(got, want, atol=2e-3, rtol=1e-4)
    torch.testing.assert_close(swapped, direct, atol=2e-3, rtol=1e-4)
    assert not torch.allclose(swapped[0], swapped[1])


def _reference_logits(model: Whisper, feats, tokens) -> torch.Tensor:
    with torch.inference_mode():
        return model.logits(tokens, model.new_cache(feats))


def test_openai_checkpoint_round_trip(tmp_path, loaded, short_features, prompt, jfk_tokens):
    model, meta = loaded
    tokens = torch.tensor([prompt + jfk_tokens])
    file = tmp_path / "tiny.en.pt"
    save_openai_checkpoint(model, file)
    sd = torch.load(file, weights_only=True)["model_state_dict"]
    assert "encoder.blocks.0.attn.query.weight" in sd and "encoder.blocks.0.attn.key.bias" not in sd
    back, back_meta = load_model(file)
    assert back_meta.alignment_heads == meta.alignment_heads  # openai's table, by file name
    assert back_meta.source == "openai" and not back_meta.multilingual
    torch.testing.assert_close(
        _reference_logits(back, short_features, tokens),
        _reference_logits(model, short_features, tokens),
        rtol=0,
        atol=0,
    )
    del back
    (tmp_path / "tiny.en.pt").rename(tmp_path / "custom.pt")
    assert load_model(tmp_path / "custom.pt")[1].alignment_heads == [(2, h) for h in range(6)] + [
        (3, h) for h in range(6)
    ]  # openai's fallback: every head of the last half
    heads = [(0, 1), (3, 5)]
    assert load_model(tmp_path / "custom.pt", alignment_heads=heads)[0].alignment_heads == heads
    assert openai_alignment_heads("tiny.en", model.dims) == meta.alignment_heads


def _to_hf_name(name: str) -> str:
    """Our (openai) parameter names -> transformers' WhisperForConditionalGeneration names."""
    fixed = {
        "encoder.positional_embedding": "encoder.embed_positions.weight",
        "decoder.positional_embedding": "decoder.embed_positions.weight",
    }
    if name in fixed:
        return "model." + fixed[name]
    for old, new in (
        ("encoder.ln_post.", "encoder.layer_norm."),
        ("decoder.ln.", "decoder.layer_norm."),
        ("decoder.token_embedding.", "decoder.embed_tokens."),
        (".blocks.", ".layers."),
        (".cross_attn_ln.", ".encoder_attn_layer_norm."),
        (".attn_ln.", ".self_attn_layer_norm."),
        (".mlp_ln.", ".final_layer_norm."),
        (".cross_attn.", ".encoder_attn."),
        (".attn.", ".self_attn."),
        (".query.", ".q_proj."),
        (".key.", ".k_proj."),
        (".value.", ".v_proj."),
        (".out.", ".out_proj."),
        (".mlp.0.", ".fc1."),
        (".mlp.2.", ".fc2."),
    ):
        name = name.replace(old, new)
    return "model." + name


def test_transformers_dir_round_trip(tmp_path, loaded, short_features, prompt, jfk_tokens):
    model, meta = loaded
    d = model.dims
    sd = {_to_hf_name(k): v.clone() for k, v in model.state_dict().items()}
    sd["proj_out.weight"] = sd["model.decoder.embed_tokens.weight"]
    torch.save(sd, tmp_path / "pytorch_model.bin")
    (tmp_path / "config.json").write_text(
        json.dumps(
            {
                "model_type": "whisper",
                "num_mel_bins": d.n_mels,
                "max_source_positions": d.n_audio_ctx,
                "d_model": d.n_audio_state,
                "encoder_attention_heads": d.n_audio_head,
                "encoder_layers": d.n_audio_layer,
                "vocab_size": d.n_vocab,
                "max_target_positions": d.n_text_ctx,
                "decoder_attention_heads": d.n_text_head,
                "decoder_layers": d.n_text_layer,
            }
        )
    )
    (tmp_path / "generation_config.json").write_text(
        json.dumps(
            {
                "alignment_heads": [list(h) for h in meta.alignment_heads],
                "begin_suppress_tokens": [220, 50256],
                "suppress_tokens": meta.suppress_ids,
            }
        )
    )
    back, back_meta = load_model(tmp_path)
    assert back_meta.source == "transformers"
    assert back_meta.alignment_heads == meta.alignment_heads
    assert back_meta.suppress_ids == meta.suppress_ids and back_meta.suppress_ids_begin == [220, 50256]
    tokens = torch.tensor([prompt + jfk_tokens])
    torch.testing.assert_close(
        _reference_logits(back, short_features, tokens),
        _reference_logits(model, short_features, tokens),
        rtol=0,
        atol=0,
    )


def test_safetensors_absent_gives_clear_error(tmp_path):
    if importlib.util.find_spec("safetensors") is not None:
        pytest.skip("safetensors is installed")
    (tmp_path / "config.json").write_text(
        json.dumps(
            {
                "num_mel_bins": 80,
                "max_source_positions": 1500,
                "d_model": 384,
                "encoder_attention_heads": 6,
                "encoder_layers": 4,
                "vocab_size": 51864,
                "max_target_positions": 448,
                "decoder_attention_heads": 6,
                "decoder_layers": 4,
            }
        )
    )
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(ImportError, match="safetensors"):
        load_model(tmp_path)


def test_float16_load_keeps_decoding(loaded, short_features, prompt, jfk_tokens):
    """dtype is honoured (CPU float16 matmuls are slow, so only a single step here)."""
    half, _ = load_model(MODEL_DIR, dtype=torch.float16)
    assert half.dtype == torch.float16
    assert half.encoder.blocks[0].attn.query.weight.dtype == torch.float16
    with torch.inference_mode():
        logits = half.logits(torch.tensor([prompt]), half.new_cache(short_features.half()))
    assert logits.dtype == torch.float32
    assert int(logits[0, -1].argmax()) == jfk_tokens[0]
