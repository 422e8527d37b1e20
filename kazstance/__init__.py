"""kazstance: stance toward restricting online platforms in Kazakh and Russian public debate.

This small package holds only what training, the HTTP service and the batch scorer share:
the label set, text handling, model loading and the one predictor they all call.
"""

__version__ = "0.1.0"
