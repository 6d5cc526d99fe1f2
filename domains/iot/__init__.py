"""IoT vertical: vibration anomaly detection across machine fleets (scenarios arrive with issue 4)."""

DOMAIN = "iot"
