"""HTTP serving shared by the edge's local API and file server and the cloud's API: the
embedded uvicorn server with per-client limits, the body-size guard, the access guard and
the problem answers."""
