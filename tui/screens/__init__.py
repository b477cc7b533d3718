"""Modal screens: help, a feature's card, a value prompt."""
