"""What the operations endpoints (/health/ready, /metrics) read from the database."""
