"""Where studies live and how they are read: the Optuna storage (SQLite, journal file, PostgreSQL), the
MLflow tracking store, the runs folder. No torch: read-only commands import only this, report/ and spec/."""
