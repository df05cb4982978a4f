"""Test doubles that stand in for devices at their boundary, shared by tests."""
