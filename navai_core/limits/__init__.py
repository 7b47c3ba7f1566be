"""How much a client may use: rate limits and the call-time budget."""
