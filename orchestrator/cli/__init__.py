# PYTHON_ARGCOMPLETE_OK  (shell completion: see the README)
"""The command line: one module per command family (its parser beside its rendering), the
shared output, and `main`. Imports commands and below; nothing imports it.

Heavy imports (SQLAlchemy, Alembic, pydantic) happen inside the commands, so `--help`
answers at once.
"""

from orchestrator.cli.main import console_main, main
from orchestrator.cli.parser import build_parser

__all__ = ["build_parser", "console_main", "main"]
