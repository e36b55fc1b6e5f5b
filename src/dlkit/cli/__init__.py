"""The dlkit command line."""
