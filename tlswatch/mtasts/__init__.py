"""MTA-STS (RFC 8461): checking a domain's set-up, and hosting its policy."""
