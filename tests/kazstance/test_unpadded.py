"""The fp32 forward without padding: the same logits as the library's, on any padding."""

from __future__ import annotations

import pytest
import torch

from conftest import SAMPLE_TEXTS
from kazstance.backends import TorchBackend
from kazstance.modeling import load_transformer
from kazstance.unpadded import unpadded_logits, unpadded_or_none

TEXTS = SAMPLE_TEXTS + ["Ok", "TikTok " * 40]  # a one-word statement and a long one: lots of padding


def test_logits_match_the_library_forward(tiny_model_dir):
    model, tokenizer = load_transformer(tiny_model_dir)
    enc = tokenizer(TEXTS, padding=True, truncation=True, max_length=64, return_tensors="pt")
    with torch.inference_mode():
        expected = model(**enc).logits
        got = unpadded_logits(model, enc["input_ids"], enc["attention_mask"])
    assert got == pytest.approx(expected, abs=1e-5)


def test_the_fp32_backend_uses_it_for_bert_models(tiny_model_dir):
    assert TorchBackend(tiny_model_dir, max_length=64).unpadded is unpadded_logits


def test_a_model_it_does_not_reproduce_keeps_the_library_forward(tiny_model_dir, monkeypatch):
    import kazstance.unpadded

    model, tokenizer = load_transformer(tiny_model_dir)
    assert unpadded_or_none(model, tokenizer) is unpadded_logits
    # say a transformers release changed BERT's attention and this file was not updated
    monkeypatch.setattr(kazstance.unpadded, "_attention", lambda *args: 10 * torch.randn_like(args[1]))
    assert unpadded_or_none(model, tokenizer) is None


def test_left_padding_keeps_the_library_forward(tiny_model_dir):
    model, tokenizer = load_transformer(tiny_model_dir)
    tokenizer.padding_side = "left"  # the library's pooler would read a padding position
    assert unpadded_or_none(model, tokenizer) is None
