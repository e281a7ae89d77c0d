"""Database primitives: engines and URLs, catalog look-ups, advisory and file locks, fences.
Imports only the core."""
