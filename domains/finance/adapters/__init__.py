"""Finance adapters, one module per adapter: ``transactions`` (a bank's CSV or Parquet tables)."""
