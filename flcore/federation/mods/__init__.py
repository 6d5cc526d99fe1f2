"""Flower client mods: what wraps a site's ClientApp on the way in and out (attacks, SecAgg+, compression, dropout)."""
