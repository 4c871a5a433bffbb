"""Calibration texts: the sample the ``--dtype auto`` check, the ``--backend auto`` measurement
and the batch-invariance probe compute (a leaf module, so that the backend chooser and the
Hugging Face predictors can both import it without an import circle)."""

# Calibration texts for the ``auto`` dtype check: varied length, sentiment and vocabulary.
CALIBRATION_TEXTS = [
    "I loved this film, the acting was superb and the story moved me.",
    "Terrible service. We waited an hour and the food was cold.",
    "The committee will meet on Tuesday to discuss the budget proposal.",
    "not bad at all :)",
    "Shares of the company fell 4% after the quarterly earnings report missed estimates.",
    "What a waste of money, it broke after two days and support never answered.",
    "The quick brown fox jumps over the lazy dog.",
    "Honestly? Best purchase I've made all year. Works perfectly, battery lasts for days.",
    "The government announced new measures to curb inflation, but critics say they come too late "
    "and will hurt the poorest households the most, while doing little for growth.",
    "meh",
    "He scored twice in the second half to secure the win for his team.",
    "I can't believe how boring and predictable this sequel turned out to be.",
]
