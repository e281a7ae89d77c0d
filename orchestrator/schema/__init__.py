"""The live schema: its description and fingerprint (pure), the catalog reader, and the
operations that revert a difference. Imports migrations, db and the core."""
