"""Where navai runs code: its background event loop and its bounded threads."""
