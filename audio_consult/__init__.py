"""Audio-first consults on libopus and aiortc (built in a later issue)."""
