"""The XAI tab's JSON and frontend files: gzipped once and kept, the same bytes as unzipped, and never stale."""

from __future__ import annotations

import gzip
import json
import shutil

from test_xai_tab import EPOCHS, shared_runs, tensorboard_client

from lightning_xai.tensorboard.format import PLUGIN_NAME, side_dir
from lightning_xai.tensorboard.plugin import STATIC

PREFIX = f"/data/plugin/{PLUGIN_NAME}"
GZIP = {"Accept-Encoding": "gzip"}


def test_gzipped_bodies_equal_the_plain_ones_and_follow_new_evaluations(tmp_path_factory, tmp_path):
    shutil.copytree(shared_runs(tmp_path_factory)[0] / "images", tmp_path / "images")
    client = tensorboard_client(tmp_path)
    routes = ["/overview", "/evaluations?run=images/version_0", "/index.js", "/static/charts.js", "/static/style.css"]
    for route in routes:
        packed, plain = client.get(PREFIX + route, headers=GZIP), client.get(PREFIX + route)
        assert packed.status_code == plain.status_code == 200, route
        assert packed.headers["Content-Encoding"] == "gzip" and "Content-Encoding" not in plain.headers, route
        assert gzip.decompress(packed.data) == plain.data, route
        assert client.get(PREFIX + route, headers=GZIP).data == packed.data, route  # the same bytes again
    assert client.get(f"{PREFIX}/index.js").data == (STATIC / "index.js").read_bytes()
    assert client.get(f"{PREFIX}/static/style.css").data == (STATIC / "style.css").read_bytes()
    assert client.get(f"{PREFIX}/static/style.css").headers["Content-Type"].startswith("text/css")

    def records(route: str) -> list[dict]:
        body = json.loads(gzip.decompress(client.get(PREFIX + route, headers=GZIP).data))
        return body["records"] if route == "/overview" else body

    first = records("/overview")
    assert first == records("/evaluations?run=images/version_0") and len(first) == EPOCHS
    folder = side_dir(tmp_path / "images" / "version_0")
    extra = {**first[-1], "evaluation": EPOCHS, "file": f"eval_{EPOCHS:06d}.f16"}  # an evaluation appended
    shutil.copy(folder / first[-1]["file"], folder / extra["file"])
    with open(folder / "index.jsonl", "a") as index:
        index.write(json.dumps(extra) + "\n")
    for route in ("/overview", "/evaluations?run=images/version_0"):
        assert [r["evaluation"] for r in records(route)] == list(range(EPOCHS + 1)), route
    runs = json.loads(gzip.decompress(client.get(f"{PREFIX}/overview", headers=GZIP).data))["runs"]
    assert runs == [{"run": "images/version_0", "evaluations": EPOCHS + 1}]
