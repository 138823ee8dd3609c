"""`newsletter serve`: the pages readers use to subscribe, confirm, unsubscribe and manage.

readers.py holds what the pages do (library, no HTTP), app.py the Starlette routes and
templates, server.py uvicorn, the access log and client IPs behind a proxy.
"""
