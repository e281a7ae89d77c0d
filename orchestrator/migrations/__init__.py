"""The Alembic side: the project and its revision graph, checksums of what a revision runs,
offline SQL and squawk lint. Imports the core and db."""
