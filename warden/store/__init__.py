"""
Warden's stores: the only package that holds SQL.
The value objects they keep are in L{warden.model}.

- ``tables``: pure in-memory tables shared by the memory fakes and the write-behind.
- ``sqlite``: the embedded default backend (``open_sqlite_pool``, ``SQLiteDirectory``,
  ``SQLiteLocationService``).
- ``cdr``: call records and live calls in SQLite (``SQLiteCallRecordStore``,
  ``SQLiteLiveCalls``).
- ``spool``: ``SpooledCallRecordStore``, the fsync'd spool that loses no call record.
- ``migrate``: numbered schema files per dialect, applied at start-up.
- ``url``: store URLs (``sqlite:...``, ``postgresql://...``) and the store password.
- ``backend``: opens the stores a URL names (``open_stores``, ``check_store``).
- ``pgpool``: ``PostgreSQLPool``, txpostgres connections with reconnection and
  bounded retries.
- ``admin``: the admin plugin's accounts, API tokens and audit log in SQLite.
- ``postgres``, ``pglocation``, ``pgadmin``: the PostgreSQL backend (directory,
  call records, live calls, bindings, admin accounts and audit log).
- ``copy``: copying directory and call records between stores (migrate-store).
- ``credentials``: digest HA1 values and ``make_extension``.
"""
