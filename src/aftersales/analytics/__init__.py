"""Batch analytics over files (CSV / Parquet) with DuckDB."""
