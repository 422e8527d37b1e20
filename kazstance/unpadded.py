"""The forward pass (fp32 or bf16) without computing on padding, and independent of the batch.

A batch of 32 statements sorted by length still pads each one to the longest: 14% more tokens
than the statements hold on the test split. The linear layers, 98% of the model's arithmetic,
work token by token, so they can run on the real tokens alone, packed into one [tokens, hidden]
matrix; only attention needs the statements apart, and runs statement by statement. The same
model, weights and result (checked when the backend loads); measured at batch 32 on two cores:
~13% more statements per second. Nothing a statement's numbers go through depends on its
neighbours, so its probabilities are the same, to the bit, alone or in any batch (`_attention`).

This is written against `BertForSequenceClassification` (the default base, multilingual-e5-small,
and the test models). Any other architecture, or a transformers release whose BERT no longer
matches this forward, keeps the library's own padded forward: see `unpadded_or_none`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

TOLERANCE = 1e-3  # largest |logit difference| from the library's forward accepted at load time
# Different lengths and scripts, so the check runs on a padded batch.
PROBE_TEXTS = ["TikTok-ты бұғаттау керек.", "Запрет ничего не решит: все уйдут в VPN и будут смотреть то же самое.", "Ok"]


def unpadded_or_none(model, tokenizer, probe_texts: list[str] = PROBE_TEXTS):
    """`model`'s unpadded forward, if the model is a BERT classifier and the forward reproduces
    the library's on `probe_texts`; otherwise None. Right padding only: with left padding the
    library's pooler reads a padding position."""
    if (type(model).__name__ != "BertForSequenceClassification" or tokenizer.padding_side != "right"
            or getattr(model.config, "position_embedding_type", "absolute") != "absolute"):
        return None
    enc = tokenizer(probe_texts, padding=True, return_tensors="pt")
    with torch.inference_mode():
        expected = model(**enc).logits
        try:
            got = unpadded_logits(model, enc["input_ids"], enc["attention_mask"])
        except (AttributeError, RuntimeError, TypeError):
            return None
    if got.shape != expected.shape or (got - expected).abs().max() > TOLERANCE:
        return None
    return unpadded_logits


def packing(attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(where each real token sits in the flattened [batch * length] batch, where each statement's
    first token sits among the real ones)."""
    real = (attention_mask.reshape(-1) != 0).nonzero().squeeze(1)
    counts = (attention_mask != 0).sum(1)
    return real, counts.cumsum(0) - counts


def unpadded_logits(model, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Logits [batch, labels] for a right-padded batch, in eval mode."""
    bert = model.bert
    batch, length = input_ids.shape
    real_tokens, first_tokens = packing(attention_mask)
    counts = (attention_mask != 0).sum(1).tolist()  # tokens per statement, in packing order
    hidden = bert.embeddings(input_ids=input_ids, token_type_ids=torch.zeros_like(input_ids))
    hidden = hidden.reshape(batch * length, -1).index_select(0, real_tokens)  # [tokens, hidden]
    for layer in bert.encoder.layer:
        attention = layer.attention
        context = _attention(attention.self, hidden, counts)
        hidden = attention.output(context, hidden)                 # dense, residual, LayerNorm
        hidden = layer.output(layer.intermediate(hidden), hidden)  # FFN, residual, LayerNorm
    # the pooler reads position 0 of each row: the [CLS] token
    return model.classifier(bert.pooler(hidden.index_select(0, first_tokens)[:, None, :]))


def _attention(self_attention, hidden, counts) -> torch.Tensor:
    """Q, K and V computed on the packed tokens, then attention statement by statement, each over
    its own tokens only. Not one padded, masked product for the batch: its kernels block the keys
    by the batch's longest length, so a statement's sums came out rounded differently with other
    neighbours; in bf16 that moved a logit by up to 0.05 with the batch. Alone, a statement's
    numbers depend on the statement only (any batch, any thread count), at no measurable cost:
    attention is ~2% of the arithmetic at these lengths."""
    heads, size = self_attention.num_attention_heads, self_attention.attention_head_size
    qkv = torch.cat([self_attention.query(hidden), self_attention.key(hidden), self_attention.value(hidden)], dim=-1)
    contexts = []
    for statement in qkv.split(counts):
        q, k, v = statement.view(1, -1, 3, heads, size).permute(2, 0, 3, 1, 4)  # each [1, heads, tokens, size]
        context = F.scaled_dot_product_attention(q, k, v, scale=self_attention.scaling)
        contexts.append(context.transpose(1, 2).reshape(-1, heads * size))
    return torch.cat(contexts)
