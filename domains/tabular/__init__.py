"""Tabular domain: binary classification on any table described by a schema (scenario ``tabular``)."""
