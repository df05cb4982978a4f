"""Sync between the edge and the cloud aggregator over MQTT."""
