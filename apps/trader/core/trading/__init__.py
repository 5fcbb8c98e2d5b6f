"""Trading in the trader core: orders, risk limits, positions from fills and the strategy host (no Django)."""
