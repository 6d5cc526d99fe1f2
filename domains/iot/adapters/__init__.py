"""IoT adapters, one module per adapter: ``vibration``; the other modules serve it only."""
