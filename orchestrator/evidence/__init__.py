"""The evidence store: the ledger, the audit chain and checkpoints (tables), keys and release
plans. Imports schema, migrations, db and the core; never a run or a command."""
