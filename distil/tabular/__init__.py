"""Recommendation and tabular data: MovieLens-100K and CSV tables with a schema, CTR teachers (DeepFM, DCN-v2,
Wide & Deep) and small students, Bernoulli KD, ensemble gating and privileged features, AUC / gAUC / log-loss.
The core reaches it only through a recipe's `tabular:` section; `distil.tabular.losses` registers its losses."""
