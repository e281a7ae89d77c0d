"""The run machinery: the application's collaborators, one target's locked and audited run,
cancellation, policies, fleets, predecessor reads and the plain-`alembic` entry."""
