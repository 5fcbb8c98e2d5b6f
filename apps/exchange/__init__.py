"""The built-in Kalshi exchange simulator (``apps.exchange.simulator``) and its ``runexchange`` command."""
