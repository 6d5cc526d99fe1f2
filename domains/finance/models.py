"""Fraud models for the finance vertical: a small MLP over standardised transaction features."""

from __future__ import annotations

from flcore.learning.models import TabularMLP


class FraudMLP(TabularMLP):
    """The fraud MLP: 128 standardised transaction features -> hidden layers -> one fraud logit.

    See :class:`flcore.learning.models.TabularMLP` for the parameters; defaults are the
    recommended ones (64, 32 hidden units, dropout 0.1).
    """
