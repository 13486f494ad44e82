"""Upload sessions: the SessionStore port and its Redis and in-memory adapters."""
