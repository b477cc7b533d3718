"""The inspector's panes, one module each."""
