"""reduce_sql: mapper outputs as Parquet with an exactly-once commit, queried in place by DuckDB."""
