"""The XAI tab's backend: a TensorBoard plugin serving the side files of :mod:`lightning_xai.tensorboard.format`.

Runs are found through TensorBoard's data provider (``list_tensors`` of this plugin's marker summaries, so the tab
lists exactly the runs that hold its data, under the Python loader and the Rust data server alike); a run's side
files are read from ``<logdir>/<run name>/plugins/lightning_xai/``. That needs a local ``--logdir`` (not
``--logdir_spec`` or a remote file system).

Routes, under ``/data/plugin/lightning_xai/``:

* ``/index.js`` and ``/static/<file>``: the frontend (ES modules, no build step);
* ``/runs``: ``[{"run": name, "evaluations": count}]``;
* ``/overview``: ``{"runs": <as /runs>, "run": R, "records": <as /evaluations of R>}`` for the first run (or
  ``?run=R``): what the tab needs to open, in one request;
* ``/evaluations?run=R``: the run's index lines (``format.py``), in order;
* ``/data?run=R&file=F``: one side file's bytes (an evaluation's fp16 maps and per-sample curves, or the probe's
  uint8 pixels).

The JSON and the frontend's files are gzipped once per version of their content and kept (TensorBoard's ``Respond``
would gzip them again at every request, 7 ms of the 11 ms ``/overview`` took here, on the server's one interpreter
that TensorBoard's own first requests share while the tab opens).
"""

from __future__ import annotations

import gzip
import json
import mimetypes
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tensorboard import context as tb_context
from tensorboard import plugin_util
from tensorboard.backend import http_util
from tensorboard.plugins import base_plugin
from werkzeug import wrappers

from lightning_xai.tensorboard.format import INDEX, PLUGIN_NAME, read_index, side_dir

__all__ = ["XaiTabLoader", "XaiTabPlugin"]

STATIC = Path(__file__).parent / "static"
_SIDE_FILE = re.compile(r"^(eval_\d{6}\.f16|probe_[0-9a-f]{12}\.u8)$")
_STATIC_FILE = re.compile(r"^[a-z_]+\.(js|css)$")
_TYPES = {".js": "text/javascript", ".css": "text/css"}


class XaiTabPlugin(base_plugin.TBPlugin):
    """The "XAI" tab: every evaluation's explanations of the probe, with a slider across evaluations.

    Args:
        context: TensorBoard's ``TBContext`` (its ``data_provider`` and ``logdir`` are used).
    """

    plugin_name = PLUGIN_NAME

    def __init__(self, context: base_plugin.TBContext) -> None:
        self._provider = context.data_provider
        self._logdir = context.logdir or ""
        self._known: dict[tuple[str, str], Path] = {}  # (experiment, run) → folder, of runs the provider listed
        self._indices: dict[Path, tuple[tuple[int, ...], list[dict[str, Any]], str]] = {}
        self._gzipped: dict[Any, tuple[Any, bytes]] = {}  # slot → (version of the content, its gzip)

    def get_plugin_apps(self) -> dict[str, Any]:
        """The routes (see the module docstring)."""
        return {
            "/index.js": self._serve_index,
            "/static/*": self._serve_static,
            "/runs": self._serve_runs,
            "/overview": self._serve_overview,
            "/evaluations": self._serve_evaluations,
            "/data": self._serve_data,
        }

    def is_active(self) -> bool:
        """Whether some run holds the tab's data."""
        return bool(self._run_dirs(tb_context.RequestContext(), ""))

    def frontend_metadata(self) -> base_plugin.FrontendMetadata:
        """An iframed ES module; the tab is called "XAI"."""
        return base_plugin.FrontendMetadata(es_module_path="/index.js", tab_name="XAI")

    def _run_dirs(self, ctx: Any, experiment: str) -> dict[str, Path]:
        """Run name → its side-file folder, for the runs whose marker summaries the data provider lists."""
        if self._provider is None or not self._logdir:
            return {}
        listed = self._provider.list_tensors(ctx, experiment_id=experiment, plugin_name=PLUGIN_NAME)
        root = Path(os.path.expanduser(self._logdir))
        folders = {}
        for run in listed:
            folder = side_dir(root if run == "." else root / run)
            if folder.is_dir():
                folders[run] = folder
                self._known[(experiment, run)] = folder
        return folders

    def _folder(self, request: wrappers.Request, cached: bool = False) -> Path | None:
        """The side-file folder of the request's run, if the data provider lists it.

        ``cached``: a run listed before is not looked up again (listing runs through the Rust data server took
        ~45 ms here; the data route is hit at every slider move).
        """
        environ, run = request.environ, request.args.get("run", "")
        experiment = plugin_util.experiment_id(environ)
        if cached and (experiment, run) in self._known:
            return self._known[(experiment, run)]
        return self._run_dirs(plugin_util.context(environ), experiment).get(run)

    def _records(self, folder: Path) -> tuple[Any, list[dict[str, Any]], str]:
        """A folder's index version (``None``: not kept), lines and JSON, read again when the index or files change.

        The version holds the names of the folder's files, since :func:`read_index` leaves out evaluations whose data
        file is missing (listing a folder of a thousand files takes well under a millisecond).
        """
        try:
            index = (folder / INDEX).stat()
            key: tuple[int, ...] | None = (index.st_size, index.st_mtime_ns, hash(frozenset(os.listdir(folder))))
        except OSError:
            key = None
        cached = self._indices.get(folder)
        if key is not None and cached is not None and cached[0] == key:
            return cached
        records = read_index(folder)
        body = json.dumps(records, separators=(",", ":"))
        if key is not None:
            self._indices[folder] = (key, records, body)
        return key, records, body

    def _respond_gzipped(
        self, request: wrappers.Request, slot: Any, version: Any, make: Callable[[], str | bytes], kind: str
    ) -> wrappers.Response:
        """``make()``'s body gzipped, from the cache while ``version`` is that of the kept gzip (``None``: not kept).

        ``Respond`` sends the gzip as it is, or gunzips it for a client that does not accept gzip.
        """
        cached = self._gzipped.get(slot)
        if version is not None and cached is not None and cached[0] == version:
            packed = cached[1]
        else:
            body = make()
            packed = gzip.compress(body.encode() if isinstance(body, str) else body, compresslevel=6, mtime=0)
            if version is not None:
                self._gzipped[slot] = (version, packed)
        return http_util.Respond(request, packed, kind, content_encoding="gzip")

    def _respond_static(self, request: wrappers.Request, name: str, kind: str) -> wrappers.Response:
        path = STATIC / name
        try:
            stat = path.stat()
            version: Any = (stat.st_size, stat.st_mtime_ns)
        except OSError:
            version = None
        return self._respond_gzipped(request, ("static", name), version, path.read_bytes, kind)

    @wrappers.Request.application
    def _serve_index(self, request: wrappers.Request) -> wrappers.Response:
        return self._respond_static(request, "index.js", "text/javascript")

    @wrappers.Request.application
    def _serve_static(self, request: wrappers.Request) -> wrappers.Response:
        name = request.path.rsplit("/", 1)[-1]
        if not _STATIC_FILE.match(name) or not (STATIC / name).is_file():
            return http_util.Respond(request, f"no static file {name!r}", "text/plain", code=404)
        kind = _TYPES.get(Path(name).suffix) or mimetypes.guess_type(name)[0] or "application/octet-stream"
        return self._respond_static(request, name, kind)

    @wrappers.Request.application
    def _serve_runs(self, request: wrappers.Request) -> wrappers.Response:
        environ = request.environ
        folders = self._run_dirs(plugin_util.context(environ), plugin_util.experiment_id(environ))
        runs = [{"run": run, "evaluations": len(self._records(folder)[1])} for run, folder in sorted(folders.items())]
        return http_util.Respond(request, runs, "application/json")

    @wrappers.Request.application
    def _serve_overview(self, request: wrappers.Request) -> wrappers.Response:
        environ, experiment = request.environ, plugin_util.experiment_id(request.environ)
        folders = self._run_dirs(plugin_util.context(environ), experiment)
        indices = {run: self._records(folder) for run, folder in sorted(folders.items())}
        runs = [{"run": run, "evaluations": len(records)} for run, (_, records, _) in indices.items()]
        wanted = request.args.get("run")
        run = wanted if wanted in indices else next(iter(indices), None)
        versions = tuple((name, version) for name, (version, _, _) in indices.items())
        version = None if any(v is None for _, v in versions) else (versions, run)

        def body() -> str:
            head = json.dumps({"runs": runs, "run": run}, separators=(",", ":"))
            return f'{head[:-1]},"records":{indices[run][2] if run is not None else "[]"}}}'

        return self._respond_gzipped(request, ("overview", experiment, run), version, body, "application/json")

    @wrappers.Request.application
    def _serve_evaluations(self, request: wrappers.Request) -> wrappers.Response:
        folder = self._folder(request, cached=True)
        if folder is None:
            return http_util.Respond(request, {"error": "unknown run"}, "application/json", code=404)
        version, _, body = self._records(folder)
        return self._respond_gzipped(request, ("evaluations", folder), version, lambda: body, "application/json")

    @wrappers.Request.application
    def _serve_data(self, request: wrappers.Request) -> wrappers.Response:
        folder = self._folder(request, cached=True)
        name = request.args.get("file", "")
        if folder is None or not _SIDE_FILE.match(name) or not (folder / name).is_file():
            return http_util.Respond(request, "no such run or file", "text/plain", code=404)
        # a side file never changes once written (the frontend adds its wall time to the URL): browsers may keep it
        return http_util.Respond(request, (folder / name).read_bytes(), "application/octet-stream", expires=3600)


class XaiTabLoader(base_plugin.TBLoader):
    """Loads :class:`XaiTabPlugin` (the ``tensorboard_plugins`` entry point)."""

    def load(self, context: base_plugin.TBContext) -> XaiTabPlugin:
        """The plugin for this TensorBoard."""
        return XaiTabPlugin(context)
