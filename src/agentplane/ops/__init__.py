"""Operations: partitions created ahead, retention and archival, billing period close,
materialized view refresh, database health."""
