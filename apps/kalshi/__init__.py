"""Kalshi WebSocket/REST protocol in plain Python: no Django import anywhere in this package."""
