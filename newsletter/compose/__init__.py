"""Draft → Issue → per-recipient Message.

build_issue() (issue.py) renders a draft once; personalize() (message.py)
makes each recipient's message from it cheaply.
"""
