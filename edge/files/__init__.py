"""Files between the edge and its chargers: firmware served, diagnostics and logs received,
over HTTP and (for chargers that only do FTP) FTP."""
