"""JSON Schemas of the files the suite writes (results.json)."""
