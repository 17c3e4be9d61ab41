"""Defences against hostile users: rate limits, security headers and CORS, the audit log.

Kept free of imports: `auth` uses the rate limiter, and the audit log uses `auth`.
"""
