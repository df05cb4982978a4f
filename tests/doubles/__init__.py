"""Test doubles that answer like real devices at their boundary (SPI, serial, NFC, GPIO)."""
