"""Commands that run the whole trader against the built-in exchange: soak, benchmarks and session replay."""
