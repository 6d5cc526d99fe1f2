"""Serving: a run's exported models loaded back, scoring new records and validated on sites that did not train them."""
