"""The `mmgraph` command line."""
