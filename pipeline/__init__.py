"""The domain of the transaction pipeline: models, stages, ledger, settings and the database.

Nothing here imports Celery or a chain SDK; `workers/` wires these functions to queues and to the
chain adapters.
"""
