"""Inference side of kazstance: the BentoML HTTP service and the batch scorer for archives."""
