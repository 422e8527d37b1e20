"""Training side of kazstance: base model, configs, data checks, fine-tuning, evaluation."""
