"""A minimal Flask app: one route, listening on every interface on port 5000."""

from flask import Flask

app = Flask(__name__)


@app.route("/")
def hello():
    return "Hello from a container built by executor!\n"


@app.route("/healthz")
def healthz():
    return {"status": "ok"}


if __name__ == "__main__":
    app.run(host="0.0.0.0", port=5000)
