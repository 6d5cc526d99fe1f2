"""IoT domain: vibration anomaly detection across machine fleets (scenario iot-vibration-fleet)."""
