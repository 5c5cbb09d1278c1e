"""What the archive says about itself: log setup, the access/audit log and its Delta writer, Prometheus metrics."""
