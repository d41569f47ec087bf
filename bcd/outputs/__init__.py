"""Outputs fed by the core: metrics, MQTT, alerts."""
