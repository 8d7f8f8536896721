-- Runs once, when the PostgreSQL volume is first initialised, as $POSTGRES_USER connected to
-- $POSTGRES_DB (optuna, the Optuna storage). MLflow's backend store gets its own database.
CREATE DATABASE mlflow;
