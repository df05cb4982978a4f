"""Stand-ins for devices at the hardware boundary, shared by integration and end-to-end tests."""
