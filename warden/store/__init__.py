"""
Warden's stores: the only package that holds SQL.
The value objects they keep are in L{warden.model}.

- ``tables``: pure in-memory tables shared by the memory fakes and the write-behind.
- ``dialect``: the one SQL layer's dialects (SQLite, PostgreSQL), cursors and
  ``Database`` that runs the stores' named interactions.
- ``directory``, ``location``, ``cdr``: the SQL stores, one per domain, for both
  databases (``SQLDirectory``, ``SQLLocationService``, ``SQLCallRecordStore``,
  ``SQLLiveCalls``).
- ``sqlite``: the embedded default database (``open_sqlite_pool``).
- ``spool``: ``SpooledCallRecordStore``, the fsync'd spool that loses no call record.
- ``migrate``: numbered schema files per dialect, applied at start-up.
- ``url``: store URLs (``sqlite:...``, ``postgresql://...``) and the store password.
- ``backend``: opens the stores a URL names (``open_stores``, ``check_store``).
- ``pgpool``: ``PostgreSQLPool``, txpostgres connections with reconnection and
  bounded retries.
- ``admin``: the admin plugin's accounts, API tokens and audit log (SQLite or
  PostgreSQL).
- ``copy``: copying directory and call records between stores (migrate-store).
- ``credentials``: digest HA1 values and ``make_extension``.
"""
