"""Site data: the adapter protocol, splits, tables, file pre-flight, partitioners and split files."""
