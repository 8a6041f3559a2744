"""Permite ``python -m companion <comando> ...``."""

from companion.cli import main

raise SystemExit(main())
