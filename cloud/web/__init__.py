"""The fleet web view: server-rendered pages (Jinja2) served by the aggregator's API
server under /web/, live through one server-sent event stream per page, for the users of
cloud/store/users.py, each seeing only their own fleet. Built by cloud/web/app.py."""
