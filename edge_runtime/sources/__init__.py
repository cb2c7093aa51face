"""Frame sources, picked by URI."""
