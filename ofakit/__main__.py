"""``python -m ofakit``: the console command without its installed script (e.g. from a source tree)."""
from ofakit.cli import main

raise SystemExit(main())
