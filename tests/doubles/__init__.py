"""Test doubles at the device boundary, reusable by end-to-end tests."""
