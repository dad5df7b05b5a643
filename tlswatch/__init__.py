"""tlswatch: receive, store and explain SMTP TLS reports (RFC 8460)."""

__version__ = "0.1.0"
