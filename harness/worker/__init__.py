"""A sweep worker: ask the study for a trial, train it, tell the study; resume, search, signals, local
worker processes."""
