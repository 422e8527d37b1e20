"""The model card (`README.md` with Hugging Face front matter) written beside every run."""

from __future__ import annotations

import yaml


def model_card(meta: dict) -> str:
    headline = meta.get("headline", "test")
    test = meta["metrics"][headline]
    front = {
        "language": ["kk", "ru"],
        "license": "mit",
        "library_name": "transformers" if meta["kind"] == "transformer" else "scikit-learn",
        "pipeline_tag": "text-classification",
        "base_model": meta["base_model"],
        "datasets": ["kazstance (hand-written, see data/README.md)"],
        "tags": ["stance-detection", "kazakh", "content-regulation"],
        "model-index": [{
            "name": f"kazstance-{meta['run_name']}",
            "results": [{
                "task": {"type": "text-classification", "name": "Stance toward platform restriction"},
                "dataset": {"name": f"kazstance {headline} split", "type": "kazstance"},
                "metrics": [{"type": k, "value": round(test[k], 4)} for k in ("macro_f1", "accuracy", "f_avg_support_oppose", "ece")],
            }],
        }],
    }
    rows = "\n".join(f"| {name} | {m['n']} | {m['accuracy']:.3f} | {m['macro_f1']:.3f} | {m['f_avg_support_oppose']:.3f} "
                     f"| {m['ece']:.3f} |" for name, m in meta["metrics"].items())
    platform_rows = "\n".join(f"| {name} | {m['platform']['n']} | {m['platform']['accuracy']:.3f} | "
                               f"{m['platform']['macro_f1']:.3f} |" for name, m in meta["metrics"].items() if "platform" in m)
    platforms = (f"""
## Platform head
Also names the platform a statement is about ({', '.join(f'`{p}`' for p in meta['platforms'])}; `general` when
none is), from a second softmax over the same output layer, trained jointly on the `platform` field.

| split | n | accuracy | macro-F1 over platforms |
|---|---|---|---|
{platform_rows}
""" if meta.get("platforms") else "")
    body = f"""
# kazstance — {meta['run_name']}

Classifies a Kazakh or Russian statement as `support`, `oppose` or `neutral` toward restricting
an online platform (blocking, age limits, local-office laws, fines, throttling...), following the
label policy in the project's `data/README.md`.

- Kind: {meta['kind']}; base model: `{meta['base_model']}`; max length {meta['max_length']} tokens.
- Calibration: temperature {meta['temperature']:.3f}, fitted on the calibration files (see config.resolved.yaml).
- Data fingerprint (sha256 of every data file the run read): `{meta['data_fingerprint']}`.

| split | n | accuracy | macro-F1 | F_avg(support, oppose) | ECE |
|---|---|---|---|---|---|
{rows}
{platforms}
## Limits
The training statements were written by hand for this project or restated from real Kazakh and
Russian news; the split scores measure fit to those distributions, not guaranteed accuracy on a
given archive. Check it on your own labelled
sample with `kazstance evaluate` before relying on it.
"""
    return "---\n" + yaml.safe_dump(front, sort_keys=False, allow_unicode=True) + "---\n" + body
