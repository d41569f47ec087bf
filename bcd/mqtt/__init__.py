"""The MQTT connection of bcd: the output (state, events, replies), the command reader and its pure checks."""
