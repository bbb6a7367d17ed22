"""A WSGI app recorded by the requests view's test: one request, one SQLite query."""

import sqlite3
from wsgiref.simple_server import WSGIRequestHandler, make_server

from tidescope.integrations.dbapi import connect
from tidescope.integrations.wsgi import TideScopeMiddleware

db = connect(sqlite3, ":memory:", check_same_thread=False)
db.execute("CREATE TABLE items (id INTEGER, name TEXT)")
db.execute("INSERT INTO items VALUES (1, 'apple')")


def lookup(item_id):
    return db.execute("SELECT name FROM items WHERE id = ?", (item_id,)).fetchone()


def app(environ, start_response):
    row = lookup(int(environ["QUERY_STRING"].split("=")[1]))
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [row[0].encode()]


class Quiet(WSGIRequestHandler):
    def log_message(self, *args):
        pass


server = make_server("127.0.0.1", 0, TideScopeMiddleware(app), handler_class=Quiet)
print(server.server_port, flush=True)
server.handle_request()
server.server_close()
