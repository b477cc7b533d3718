"""circuit-tracer's own viewer, offline, in headless Chromium: a check that a graph folder
(graph-metadata.json plus {slug}.json, as circuit_tracer.utils.create_graph_files writes
them) draws every node it holds and clicks through without errors.

The viewer (circuit_tracer/frontend/assets in the reference venv) loads its libraries from
CDNs, so offline it is a blank page. ensure_viewer_assets() installs pinned copies from npm
into <repo>/.reference/viewer-npm and serves a patched copy of the assets whose index.html
points at them; the installed package is never edited. The page is served by circuit-tracer's
own frontend/local_server.py, run in the reference venv, and driven by playwright-core
(viewer_driver.cjs) with Debian's chromium.

    report = check_graph_in_viewer(graph_dir, "my-slug")
    assert not report.missing and not report.console_errors

Standard library only.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from circuit_tracer_env import HERE, REFERENCE_DIR, CircuitTracerError, ensure_venv, locked

NPM_DIR = REFERENCE_DIR / "viewer-npm"
FRONTEND_DIR = REFERENCE_DIR / "viewer-frontend"
DRIVER = HERE / "viewer_driver.cjs"
# What index.html loads from CDNs, and the local files served instead (in order). The
# transformer-circuits d3 is d3 v7 and its jetpack build adds d3-jetpack to it: append('div.c'),
# .at, .st, appendMany, nestBy, conventions, attachTooltip. d3-jetpack 2.2.1's UMD build
# extends the global d3 (2.3.0's builds replace it: its d3v7+jetpack bundle patches one copy of
# d3-selection and exports another, so appendMany is missing), and its nestBy and
# attachTooltip need d3-collection's nest and keys, which d3 v6+ dropped: d3-collection 1.0.7
# extends the global d3 too. npy_v0 is only used for .npy files (the addition page), so a stub
# stands in; the hot-reload client is dropped. transformer-circuits' jetpack also puts
# drawAxis(svg) on the object d3.conventions returns (d3-jetpack has it as d3.drawAxis(c)):
# a four-line shim adds it.
NPM_PACKAGES = {
    "d3": "7.9.0",
    "d3-collection": "1.0.7",
    "d3-jetpack": "2.2.1",
    "dagre": "0.8.5",
    "pako": "2.1.0",
    "playwright-core": "1.65.1",
    "ajv": "8.17.1",  # Neuronpedia's graph upload validates with Ajv 8 (neuronpedia.py)
}
CDN = "https://transformer-circuits.pub/2025/attribution-graphs/static_js/lib/"
CDN_TO_LOCAL: dict[str, tuple[str, ...]] = {
    f"{CDN}hotserver-client-ws.js": (),
    f"{CDN}d3.js": ("d3/dist/d3.min.js",),
    f"{CDN}jetpack_2024-07-20.js": (
        "d3-collection/dist/d3-collection.min.js",
        "d3-jetpack/build/d3-jetpack.cjs",
        "jetpack-shim.js",
    ),
    f"{CDN}npy_v0.js": ("npy-stub.js",),
    "https://unpkg.com/dagre@0.8.5/dist/dagre.min.js": ("dagre/dist/dagre.min.js",),
    "https://unpkg.com/pako@2.1.0/dist/pako.min.js": ("pako/dist/pako.min.js",),
}
# Written by lenstop, not from npm.
LOCAL_FILES = {
    "npy-stub.js": (
        "// lenstop's offline stand-in for transformer-circuits.pub's npy_v0.js, which only .npy files need\n"
        "window.npyjs = {parse() { throw new Error('npy files are not served by the offline viewer') }}\n"
    ),
    "jetpack-shim.js": (
        "// lenstop: c.drawAxis(svg) on d3.conventions' result, as transformer-circuits' jetpack has it\n"
        ";(function(){ var conventions = d3.conventions\n"
        "  d3.conventions = function(c){ c = conventions(c)\n"
        "    c.drawAxis = function(svg){ return d3.drawAxis(Object.assign({}, c, {svg: svg || c.svg})) }\n"
        "    return c } })()\n"
    ),
}
CHROMIUM = "/usr/bin/chromium"


class ViewerError(RuntimeError):
    """The viewer harness could not be set up or did not run; the message says why."""


@dataclass(frozen=True)
class ViewerReport:
    """What headless Chromium saw of one graph in circuit-tracer's viewer."""

    slug: str
    file_node_ids: list[str]  # every node in {slug}.json
    expected_node_ids: list[str]  # those the viewer should draw (see viewer_hides)
    hidden_by_viewer: dict[str, str]  # node id -> why the viewer's own rules hide it
    drawn_node_ids: list[str]  # the ids of `.link-graph svg text.node`, one per drawn node
    console_errors: list[str]
    page_errors: list[str]  # uncaught exceptions and rejections
    failed_requests: list[dict[str, Any]]  # to the local server: network errors and status >= 400
    blocked_requests: list[dict[str, Any]]  # anything not on the local server, aborted
    requests: list[dict[str, Any]]
    click: dict[str, Any] | None  # target, clicked_node_ids, panel_text, requests, errors
    timings: dict[str, float] = field(default_factory=dict)
    error: str | None = None  # set when nothing drew; body_text then says what the page showed
    body_text: str | None = None

    @property
    def missing(self) -> list[str]:
        """Nodes the viewer should draw and did not."""
        drawn = set(self.drawn_node_ids)
        return [n for n in self.expected_node_ids if n not in drawn]

    @property
    def unexpected(self) -> list[str]:
        """Nodes drawn that the file does not hold."""
        known = set(self.file_node_ids)
        return [n for n in self.drawn_node_ids if n not in known]


def viewer_hides(graph: dict[str, Any], node_threshold: float | None) -> dict[str, str]:
    """The nodes circuit-tracer's viewer (utilCg.formatData) leaves out of a graph JSON, and
    why. With a pruning threshold (index.html takes graph-metadata.json's `node_threshold`
    for the slug, not the graph's; None: no pruning): a node whose `influence`
    is not <= it, as JavaScript compares (null counts as 0, a missing key hides the node),
    embedding and logit nodes exempt. Then a featureId (layer_feature_ctx) held by more than
    2/3 as many nodes as there are prompt tokens."""
    hidden: dict[str, str] = {}
    threshold, nodes = node_threshold, graph["nodes"]
    if threshold:
        for node in nodes:
            if node["feature_type"] in ("embedding", "logit"):
                continue
            if "influence" not in node:
                hidden[node["node_id"]] = "no influence (undefined <= threshold is false)"
            elif not (node["influence"] or 0) <= threshold:
                hidden[node["node_id"]] = f"influence {node['influence']:.4f} > node_threshold {threshold}"
    by_feature: dict[str, list[str]] = {}
    for node in nodes:
        if node["node_id"] not in hidden:
            by_feature.setdefault(f"{node['layer']}_{node['feature']}_{node['ctx_idx']}", []).append(node["node_id"])
    limit = len(graph["metadata"]["prompt_tokens"]) * 2 / 3
    for feature_id, ids in by_feature.items():
        if len(ids) > limit:
            for node_id in ids:
                hidden[node_id] = f"featureId {feature_id} on {len(ids)} nodes > 2/3 of the prompt"
    return hidden


def _listed_threshold(graph_dir: Path, slug: str) -> float | None:
    """graph-metadata.json's node_threshold for `slug`, where the viewer's pruning starts
    (None when it has none, or the listing or the slug is missing: then nothing draws)."""
    listing = graph_dir / "graph-metadata.json"
    graphs = json.loads(listing.read_text())["graphs"] if listing.exists() else []
    entry = next((g for g in graphs if g["slug"] == slug), None)
    threshold = entry.get("node_threshold") if entry else None
    return threshold if isinstance(threshold, int | float) else None


def ensure_chromium() -> Path:
    """Debian's chromium, installed with apt-get when missing and this process is root."""
    found = shutil.which("chromium") or (CHROMIUM if Path(CHROMIUM).exists() else None)
    if found:
        return Path(found)
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise ViewerError("chromium is missing: run `apt-get install -y chromium` as root (Debian)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "--no-install-recommends", "chromium"]
    with locked(REFERENCE_DIR / "chromium.lock"):
        done = subprocess.run(install, capture_output=True, text=True, env=env, timeout=1800)
        if done.returncode != 0:  # a stale package list: update once and retry
            subprocess.run(["apt-get", "update"], capture_output=True, text=True, env=env, timeout=600)
            done = subprocess.run(install, capture_output=True, text=True, env=env, timeout=1800)
    found = shutil.which("chromium")
    if done.returncode != 0 or not found:
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-10:])
        raise ViewerError(f"apt-get install chromium failed (exit {done.returncode}):\n{tail}")
    return Path(found)


def _npm_stamp() -> str:
    return json.dumps({"packages": NPM_PACKAGES, "driver": DRIVER.name}, sort_keys=True)


def _ensure_npm() -> Path:
    """The pinned npm packages in .reference/viewer-npm/node_modules (installed once)."""
    modules = NPM_DIR / "node_modules"
    stamp = NPM_DIR / "lenstop-stamp.json"
    with locked(REFERENCE_DIR / "viewer-npm.lock"):
        if modules.is_dir() and stamp.exists() and stamp.read_text() == _npm_stamp():
            return modules
        npm = shutil.which("npm")
        if not npm:
            raise ViewerError("npm is missing: install Node.js 18+ (Debian: apt-get install -y nodejs npm)")
        shutil.rmtree(NPM_DIR, ignore_errors=True)
        NPM_DIR.mkdir(parents=True)
        package = {"name": "lenstop-viewer-reference", "private": True, "dependencies": NPM_PACKAGES}
        (NPM_DIR / "package.json").write_text(json.dumps(package, indent=2))
        command = [npm, "install", "--no-audit", "--no-fund", "--save-exact", "--ignore-scripts"]
        done = subprocess.run(command, cwd=NPM_DIR, capture_output=True, text=True, timeout=1800)
        if done.returncode != 0:
            tail = "\n".join((done.stdout + done.stderr).splitlines()[-15:])
            raise ViewerError(f"npm install in {NPM_DIR} failed (exit {done.returncode}):\n{tail}")
        stamp.write_text(_npm_stamp())
        return modules


def _installed_assets(python: Path) -> Path:
    code = "import circuit_tracer, pathlib; print(pathlib.Path(circuit_tracer.__file__).parent / 'frontend' / 'assets')"
    done = subprocess.run([str(python), "-c", code], capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        raise CircuitTracerError(f"cannot locate circuit-tracer's frontend assets:\n{done.stderr[-2000:]}")
    return Path(done.stdout.strip())


def _served(path: str) -> str:
    """The name a library is served under: .js, whatever npm calls it (d3-jetpack's UMD
    build is a .cjs file, which servers do not label as JavaScript)."""
    return path if path.endswith(".js") else path.rsplit(".", 1)[0] + ".js"


def patch_index(html: str) -> str:
    """index.html with every CDN script pointed at ./lib/ (or dropped); raises if a script
    from elsewhere is left, so a new circuit-tracer that loads something else fails here."""
    for url, local in CDN_TO_LOCAL.items():
        tag = f"<script src='{url}'></script>"
        if tag not in html:
            raise ViewerError(f"circuit-tracer's index.html no longer loads {url}: update CDN_TO_LOCAL")
        html = html.replace(tag, "".join(f"<script src='./lib/{_served(path)}'></script>" for path in local))
    left = re.findall(r"""<script[^>]+src=['"](https?://[^'"]+)""", html)
    if left:
        raise ViewerError(f"index.html still loads from the network: {left}")
    return html


def ensure_viewer_assets() -> Path:
    """A patched copy of circuit-tracer's viewer assets (.reference/viewer-frontend) that
    loads nothing from the network, with ./lib/ holding the npm copies. Built once, rebuilt
    when the reference venv or the pins change."""
    python = ensure_venv()
    modules = _ensure_npm()
    source = _installed_assets(python)
    recipe = json.dumps([_npm_stamp(), str(source), CDN_TO_LOCAL, LOCAL_FILES]) + (source / "index.html").read_text()
    key = hashlib.sha256(recipe.encode()).hexdigest()
    stamp = FRONTEND_DIR / "lenstop-stamp.txt"
    with locked(REFERENCE_DIR / "viewer-frontend.lock"):
        if stamp.exists() and stamp.read_text() == key:
            return FRONTEND_DIR
        shutil.rmtree(FRONTEND_DIR, ignore_errors=True)
        shutil.copytree(source, FRONTEND_DIR)
        index = FRONTEND_DIR / "index.html"
        index.write_text(patch_index(index.read_text()))
        lib = FRONTEND_DIR / "lib"
        for path in (path for local in CDN_TO_LOCAL.values() for path in local):
            target = lib / _served(path)
            target.parent.mkdir(parents=True, exist_ok=True)
            if path in LOCAL_FILES:
                target.write_text(LOCAL_FILES[path])
            else:
                shutil.copyfile(modules / path, target)
        stamp.write_text(key)
        return FRONTEND_DIR


_SERVE = """
import sys
from circuit_tracer.frontend.local_server import serve
server = serve(data_dir=sys.argv[1], frontend_dir=sys.argv[2], port=0)
print(server.httpd.server_address[1], flush=True)
sys.stdin.read()  # serve until the parent closes stdin
server.stop()
"""


@contextlib.contextmanager
def serving(graph_dir: str | os.PathLike[str]) -> Iterator[str]:
    """circuit-tracer's own local_server (in the reference venv) serving the patched viewer
    and `graph_dir` (its /data/ and /graph_data/ routes); yields the base URL."""
    python = ensure_venv()
    frontend = ensure_viewer_assets()
    log = tempfile.TemporaryFile(mode="w+")  # a file, not a pipe nobody reads, which could fill and block it
    process = subprocess.Popen(
        [str(python), "-c", _SERVE, str(Path(graph_dir).resolve()), str(frontend)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline().strip()
        if not line.isdigit():
            process.kill()
            process.wait()
            log.seek(0)
            raise ViewerError(f"circuit-tracer's local_server did not start: {line} {log.read()[-2000:]}")
        yield f"http://127.0.0.1:{line}"
    finally:
        if process.poll() is None:
            with contextlib.suppress(BrokenPipeError):
                assert process.stdin is not None
                process.stdin.close()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        log.close()


def check_graph_in_viewer(
    graph_dir: str | os.PathLike[str],
    slug: str,
    click_feature: bool = True,
    click_node_id: str | None = None,
    timeout_s: float = 60,
    screenshot: str | os.PathLike[str] | None = None,
) -> ViewerReport:
    """Open `slug` from `graph_dir` in circuit-tracer's viewer in headless Chromium, wait for
    the link graph to draw, and (click_feature) click a feature node: `click_node_id`, or the
    first drawn `cross layer transcoder` node. Never fails on what it sees; the caller asserts."""
    graph_dir = Path(graph_dir)
    graph = json.loads((graph_dir / f"{slug}.json").read_text())
    chromium = ensure_chromium()
    modules = _ensure_npm()
    if not shutil.which("node"):
        raise ViewerError("node is missing: install Node.js 18+ (Debian: apt-get install -y nodejs)")
    hidden = viewer_hides(graph, _listed_threshold(graph_dir, slug))
    file_ids = [n["node_id"] for n in graph["nodes"]]
    with serving(graph_dir) as base, tempfile.TemporaryDirectory(prefix="lenstop-chromium-") as profile:
        options = {
            "playwright": str(modules / "playwright-core"),
            "chromium": str(chromium),
            "url": f"{base}/index.html?slug={slug}",
            "click": click_feature,
            "clickNodeId": click_node_id,
            "userDataDir": profile,
            "timeoutMs": int(timeout_s * 1000),
            "settleMs": 1000,
            "screenshot": str(screenshot) if screenshot else None,
        }
        done = subprocess.run(
            ["node", str(DRIVER), json.dumps(options)], capture_output=True, text=True, timeout=timeout_s * 3
        )
    if done.returncode != 0:
        raise ViewerError(f"the viewer driver failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    seen = json.loads(done.stdout)
    return ViewerReport(
        slug=slug,
        file_node_ids=file_ids,
        expected_node_ids=[n for n in file_ids if n not in hidden],
        hidden_by_viewer=hidden,
        drawn_node_ids=seen["drawn_node_ids"],
        console_errors=seen["console_errors"],
        page_errors=seen["page_errors"],
        failed_requests=seen["failed_requests"],
        blocked_requests=seen["blocked_requests"],
        requests=seen["requests"],
        click=seen["click"],
        timings=seen["timings"],
        error=seen.get("error"),
        body_text=seen.get("body_text"),
    )
