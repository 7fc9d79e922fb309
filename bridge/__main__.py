"""``python -m bridge`` is ``callbridge``."""

from bridge.cli import main

raise SystemExit(main())
