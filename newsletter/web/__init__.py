"""`newsletter serve`: the pages readers use to subscribe, confirm, unsubscribe and manage.

app.py wires a routes table over the views: reader_pages.py (the pages), webhooks.py
(providers' events), health.py; reader_status.py changes readers' status (library, no
HTTP), confirmation.py sends the confirmation and manage-link emails, limits.py counts
sign-ups and link requests, context.py holds what every view shares, error_pages.py
answers database failures and too-large posts, middleware.py limits bodies and logs
requests, server.py runs uvicorn, timeouts.py lets go of idle and slow clients.
"""
