"""HTTP routes by concern: ``pose`` (inference) and ``system`` (models, health, metrics, page)."""
