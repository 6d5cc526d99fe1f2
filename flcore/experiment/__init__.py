"""Experiments: preparing sites, running the arms, scoring, results.json, seeds, statistics, robustness, site checks."""
