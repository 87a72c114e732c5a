"""``python -m mmgraph``: the ``mmgraph`` command (:mod:`mmgraph.cli`)."""

from mmgraph.cli import main

raise SystemExit(main())
