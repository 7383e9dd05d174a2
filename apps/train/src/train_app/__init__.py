"""`apps/train`: train a tau policy (tau-models) on a tau-data mixture through tau-train."""
