"""Learning: the task contract, models, the training loop, XGBoost, metrics and DP-SGD accounting."""
