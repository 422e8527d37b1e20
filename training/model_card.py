"""The model card (`README.md` with Hugging Face front matter) written beside every run."""

from __future__ import annotations

import yaml


def model_card(meta: dict) -> str:
    test = meta["metrics"]["test"]
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
                "dataset": {"name": "kazstance test split", "type": "kazstance"},
                "metrics": [{"type": k, "value": round(test[k], 4)} for k in ("macro_f1", "accuracy", "f_avg_support_oppose", "ece")],
            }],
        }],
    }
    val = meta["metrics"]["validation"]
    body = f"""
# kazstance — {meta['run_name']}

Classifies a Kazakh or Russian statement as `support`, `oppose` or `neutral` toward restricting
an online platform (blocking, age limits, local-office laws, fines, throttling...), following the
label policy in the project's `data/README.md`.

- Kind: {meta['kind']}; base model: `{meta['base_model']}`; max length {meta['max_length']} tokens.
- Calibration: temperature {meta['temperature']:.3f}, fitted on the validation split.
- Data fingerprint (sha256 of the train/validation/test files): `{meta['data_fingerprint']}`.

| split | n | accuracy | macro-F1 | F_avg(support, oppose) | ECE |
|---|---|---|---|---|---|
| validation | {val['n']} | {val['accuracy']:.3f} | {val['macro_f1']:.3f} | {val['f_avg_support_oppose']:.3f} | {val['ece']:.3f} |
| test | {test['n']} | {test['accuracy']:.3f} | {test['macro_f1']:.3f} | {test['f_avg_support_oppose']:.3f} | {test['ece']:.3f} |

## Limits
The training statements were written by hand for this project; the split scores measure fit to
that distribution, not guaranteed accuracy on real archives. Check it on your own labelled
sample with `kazstance evaluate` before relying on it.
"""
    return "---\n" + yaml.safe_dump(front, sort_keys=False, allow_unicode=True) + "---\n" + body
