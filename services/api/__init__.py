"""The HTTPS API: mutual TLS, the ACL, and the job endpoints."""
