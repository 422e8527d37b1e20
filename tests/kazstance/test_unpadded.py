"""The fp32 forward without padding: the same logits as the library's, on any padding."""

from __future__ import annotations

import numpy as np
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


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("threads", [1, 2])
def test_a_text_gets_the_same_logits_alone_and_in_any_batch(tiny_model_dir, dtype, threads):
    # An HTTP answer must not depend on other clients' traffic, nor a resumed scoring run on its
    # chunking: in bf16, one padded attention product for the batch moved a logit by up to 0.05.
    backend = TorchBackend(tiny_model_dir, max_length=64, dtype=dtype)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        target, others = TEXTS[0], TEXTS[1:] * 3
        alone = backend.logits([target])[0]
        for k in range(10):
            neighbours = others[k:k + 2 + 2 * k]
            batch = neighbours[:k % len(neighbours)] + [target] + neighbours[k % len(neighbours):]
            got = backend.logits(batch)[k % len(neighbours)]
            # bf16 comes out identical to the bit; fp32's matrix products pick kernels by the row
            # count, which moves the last bits (~1e-9 here)
            np.testing.assert_allclose(got, alone, atol=1e-6, rtol=0)
    finally:
        torch.set_num_threads(before)
