"""
Warden's stores: the only package that holds SQL.

- ``model``: the value objects the stores keep.
- ``tables``: pure in-memory tables shared by the memory fakes and the write-behind.
- ``sqlite``: the embedded default backend (``open_sqlite_pool``, ``SQLiteDirectory``,
  ``SQLiteLocationService``).
- ``cdr``: call records and live calls in SQLite (``SQLiteCallRecordStore``,
  ``SQLiteLiveCalls``).
- ``spool``: ``SpooledCallRecordStore``, the fsync'd spool that loses no call record.
- ``caching``: ``CachingDirectory``, a TTL cache in front of any directory.
- ``migrate``: numbered schema files per dialect, applied at start-up.
- ``credentials``: digest HA1 values and ``make_extension``.
"""
